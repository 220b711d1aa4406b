//! `[finetune.lora]` (issue 23 part 1) end to end on a Hugging Face base: only the adapters
//! train (the base stays bitwise), a stopped run resumes to the same weights, `export hf` and
//! `export openclip` merge them (read by transformers and open_clip, equal to the adapted model
//! within 1e-5), `export peft` is read by PEFT's `PeftModel` on the base (within 1e-5), and an
//! adapter folder opens as its base with the adapters folded in.
use crate::common::hub_server::fixtures;
use crate::common::tiny::{setup_with, tiny, train_named, weights};
use crate::common::{self, cliptrain, ok};
use cliptrain::interop::ModelSource;
use cliptrain::model::{ClipModel, LoadMode, is_adapter, load_named};
use std::path::Path;
use tch::{Device, Tensor, nn::VarStore};

const LORA: &str = r#"
[finetune]
logit_scale = "freeze"
[finetune.lora]
rank = 4
alpha = 8.0
targets = ["q_proj", "v_proj", "fc1"]
"#;

fn parity(args: &[&str]) -> String {
    common::reference("interop_parity.py", args)
}

/// The adapted model of checkpoint `ckpt` as training runs it (adapters unmerged), its features
/// of random images and of token rows written to `cmp/` for the reference side.
fn write_adapted_outputs(ckpt: &Path, cmp: &Path) {
    let _rng = common::rng_lock();
    let cfg = cliptrain::checkpoint::read_config(ckpt).unwrap();
    let source = ModelSource::open(ckpt).unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let mut model = ClipModel::new(&vs.root(), &source.spec).unwrap();
    model.attach_adapters(&vs.root(), cfg.finetune.lora.as_ref().unwrap());
    let path = ckpt.join("model.safetensors");
    let raw = Tensor::read_safetensors(&path).unwrap();
    load_named(&mut vs, raw, LoadMode::Strict, &path).unwrap();
    let tok = source.tokenizer.clone().unwrap();
    let d = &cfg.data;
    let (mean_std, plain_dir) = ((d.image_mean, d.image_std), fixtures().join("hf"));
    tch::manual_seed(7);
    common::write_comparison(&model, &tok, mean_std, cmp);
    // The adapters matter: the base's features of the same images differ, so a reader that
    // dropped them could not pass.
    let base = cliptrain::interop::LoadedModel::open(&plain_dir, Device::Cpu).unwrap();
    let base_cmp = cmp.join("base");
    tch::manual_seed(7);
    common::write_comparison(&base.model, &tok, mean_std, &base_cmp);
    let read = |dir: &Path| {
        let mut t = Tensor::read_safetensors(dir.join("outputs.safetensors")).unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    for ((n, a), (_, b)) in read(cmp).iter().zip(read(&base_cmp)) {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff > 1e-3, "the adapters barely change {n}: {diff}");
    }
}

#[test]
fn lora_trains_only_adapters_resumes_exactly_and_exports_merged_and_as_peft() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = fixtures().join("hf");
    let init = format!("model.init_from={:?}", base.to_str().unwrap());
    let cfg = tiny()
        .sets(&[
            &init,
            "optim.steps=4",
            "optim.lr=2e-2",
            "checkpoint.every=2",
        ])
        .merge(LORA);
    setup_with(d, &cfg);
    let train = |name: &str, more: &[&str]| train_named(d, name, more);
    train("t", &[]);
    let ckpt = d.join("runs/t/latest").canonicalize().unwrap();

    // The checkpoint: the base bit for bit, plus adapters that moved.
    let saved = weights(&ckpt);
    let base_weights: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(base.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let adapters: Vec<&(String, Tensor)> = saved.iter().filter(|(n, _)| is_adapter(n)).collect();
    // One block per tower, three targets, A and B.
    assert_eq!(
        adapters.len(),
        2 * 3 * 2,
        "{:?}",
        saved.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for (n, t) in saved.iter().filter(|(n, _)| !is_adapter(n)) {
        assert!(
            t.equal(&base_weights[n]),
            "{n} changed: only the adapters train"
        );
    }
    let moved = adapters
        .iter()
        .filter(|(n, _)| n.contains("lora_B"))
        .map(|(_, t)| t.abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(moved > 1e-4, "lora_B left its zero init: {moved}");

    // Stopped half-way and resumed: the same weights as the uninterrupted run.
    train("split", &["--stop-at-step", "2"]);
    train("split", &["--resume", "auto"]);
    for ((n, a), (_, b)) in saved.iter().zip(weights(&d.join("runs/split/latest"))) {
        assert!(a.equal(&b), "{n} differs after resume");
    }

    let cmp = d.join("cmp");
    write_adapted_outputs(&ckpt, &cmp);
    let ckpt_s = ckpt.to_str().unwrap();
    for kind in ["hf", "openclip", "peft"] {
        ok(cliptrain(
            &["-q", "export", kind, "--checkpoint", ckpt_s, "--out", kind],
            d,
        ));
    }
    // Merged: plain CLIP folders, no PEFT needed.
    let (hf, oc, cmp_s) = (d.join("hf"), d.join("openclip"), cmp.to_str().unwrap());
    let report = parity(&["hf-check", hf.to_str().unwrap(), cmp_s, "--tol", "1e-5"]);
    println!("merged -> transformers: {}", report.trim());
    let report = parity(&[
        "openclip-check",
        oc.to_str().unwrap(),
        cmp_s,
        "--tol",
        "1e-5",
    ]);
    println!("merged -> open_clip: {}", report.trim());
    let hf_tensors = Tensor::read_safetensors(hf.join("model.safetensors")).unwrap();
    assert!(hf_tensors.iter().all(|(n, _)| !is_adapter(n)));

    // The adapters alone, on the base, in PEFT.
    let peft = d.join("peft");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 6);
    let report = parity(&[
        "peft-check",
        peft.to_str().unwrap(),
        cmp_s,
        "--base",
        base.to_str().unwrap(),
        "--tol",
        "1e-5",
    ]);
    println!("adapters -> PEFT: {}", report.trim());
    assert!(report.contains("\"lora_modules\": 6"), "{report}");

    // An adapter folder opens as its base with the adapters folded in: the checkpoint's model.
    let (_, from_peft) = ModelSource::open(&peft).unwrap().tensors().unwrap();
    let (_, from_ckpt) = ModelSource::open(&ckpt).unwrap().tensors().unwrap();
    let from_ckpt: std::collections::HashMap<_, _> = from_ckpt.into_iter().collect();
    assert_eq!(from_peft.len(), from_ckpt.len());
    for (n, t) in &from_peft {
        let diff = (t - &from_ckpt[n]).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{n}: {diff}");
    }

    // An adapter_config.json whose r disagrees with the matrices is refused, not folded in with
    // the wrong scale.
    let lying = d.join("peft-r8");
    std::fs::create_dir_all(&lying).unwrap();
    std::fs::copy(
        peft.join("adapter_model.safetensors"),
        lying.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut wrong = config.clone();
    wrong["r"] = 8.into();
    std::fs::write(lying.join("adapter_config.json"), wrong.to_string()).unwrap();
    let err = ModelSource::open(&lying)
        .unwrap()
        .tensors()
        .unwrap_err()
        .to_string();
    assert!(err.contains("but adapter_config.json says r = 8"), "{err}");

    // A run without adapters has nothing to export as PEFT.
    let plain = common::repo().join("tests/fixtures/checkpoint-per-tensor-adamw/step-0000003");
    let out = cliptrain(
        &[
            "export",
            "peft",
            "--checkpoint",
            plain.to_str().unwrap(),
            "--out",
            "x",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no [finetune.lora]"),
        "{err}"
    );
}
