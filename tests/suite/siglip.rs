//! `model.kind = "siglip"` against Hugging Face `transformers`' `SiglipModel`, both directions
//! (fp32 on CPU, within 1e-4), and training it: from scratch with the sigmoid loss, and from an
//! imported HF folder with exact resume.
//!
//! `scripts/siglip_parity.py` (run with the torch venv's python) makes a tiny random
//! `SiglipModel` folder and its outputs, and checks an exported folder with
//! `SiglipModel.from_pretrained`. Missing Python packages fail the test, never skip it.
use crate::common;
use crate::common::tiny::{losses, tiny, weights};
use crate::common::{cliptrain, ok, small_synth};
use cliptrain::interop::{LoadedModel, SourceKind};
use cliptrain::model::{ClipModel, LogitHead, ModelKind};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn siglip_parity(args: &[&str]) -> String {
    common::reference("siglip_parity.py", args)
}

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// Every output the two sides compare, contiguous so it can be written.
fn our_outputs(m: &ClipModel, px: &Tensor, ids: &Tensor) -> Vec<(String, Tensor)> {
    tch::no_grad(|| {
        let out = m.forward(px, ids);
        vec![
            ("image_embeds".into(), out.image_embeds),
            ("text_embeds".into(), out.text_embeds),
            ("logits_per_image".into(), out.logits_per_image.contiguous()),
            ("logits_per_text".into(), out.logits_per_text.contiguous()),
            ("image_features".into(), m.encode_image(px)),
            ("text_features".into(), m.encode_text(ids)),
        ]
    })
}

#[test]
fn an_hf_siglip_folder_reproduces_transformers_outputs() {
    let dir = tempfile::tempdir().unwrap();
    siglip_parity(&["make", dir.path().to_str().unwrap()]);
    let _rng = common::rng_lock();
    let loaded = LoadedModel::open(&dir.path().join("hf"), Device::Cpu).unwrap();
    let spec = &loaded.source.spec;
    assert_eq!(loaded.source.kind, SourceKind::HuggingFace);
    assert_eq!(
        (spec.kind, spec.head),
        (ModelKind::Siglip, LogitHead::Siglip)
    );
    assert_eq!((spec.embed_dim, spec.layer_norm_eps), (64, 1e-6));
    let inputs = read(&dir.path().join("inputs.safetensors"));
    let reference = read(&dir.path().join("outputs.safetensors"));
    let ours = our_outputs(&loaded.model, &inputs["pixel_values"], &inputs["input_ids"]);
    assert_eq!(reference.len(), ours.len());
    for (name, t) in &ours {
        let r = &reference[name];
        assert_eq!(t.size(), r.size(), "{name}");
        let diff = (t - r).abs().max().double_value(&[]);
        println!("HF -> ours, siglip: {name} max abs diff {diff:.3e}");
        assert!(diff <= TOL, "{name}: max abs diff {diff} > {TOL}");
    }
    // The bias is in the logits: without it they would be off by 3.5.
    assert_eq!(loaded.model.logit_bias().unwrap().double_value(&[0]), -3.5);
}

/// The run config of the SigLIP training tests: the tiny config on 2 shards with SigLIP's
/// image mean/std, the sigmoid loss and `steps` steps; `model` (TOML) replaces its `[model]`.
fn siglip_toml(model: &str, steps: u64) -> String {
    tiny()
        .sets(&[
            r#"run.name="s""#,
            "run.seed=5",
            r#"data.train="syn/train-{000000..000001}.tar""#,
            "data.image_mean=[0.5, 0.5, 0.5]",
            "data.image_std=[0.5, 0.5, 0.5]",
            // SigLIP's own eval resize: the whole image to the square, which its export states.
            r#"data.image_resize="squash""#,
            r#"loss.kind="siglip""#,
            &format!("optim.steps={steps}"),
            "optim.warmup_steps=1",
        ])
        .unset("model")
        .merge(model)
        .text()
}

/// From scratch, with patch dropout (no class token to keep) and activation checkpointing on;
/// then `export hf` of the trained model, read by `transformers.SiglipModel`.
#[test]
fn siglip_trains_from_scratch_and_its_hf_export_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_synth(d, 64, 8, 32);
    let model = r#"
[model]
kind = "siglip"
embed_dim = 32
activation = "gelu_tanh"
layer_norm_eps = 1e-6
grad_checkpointing = true
[model.vision]
image_size = 32
patch_size = 8
width = 32
layers = 2
heads = 2
patch_dropout = 0.5
[model.text]
vocab_size = 600
context_length = 16
width = 24
layers = 2
heads = 2
"#;
    std::fs::write(d.join("s.toml"), siglip_toml(model, 3)).unwrap();
    ok(cliptrain(&["train", "--config", "s.toml"], d));
    let l = losses(&d.join("runs/s"));
    assert_eq!(l.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(l.iter().all(|x| x.1.is_finite()), "{l:?}");
    let ckpt = d.join("runs/s/latest").canonicalize().unwrap();
    let named: Vec<String> = weights(&ckpt).into_iter().map(|(n, _)| n).collect();
    assert!(named.contains(&"vision_model.head.probe".to_string()));
    assert!(!named.iter().any(|n| n.contains("projection")), "{named:?}");

    ok(cliptrain(
        &["export", "hf", "--checkpoint", "runs/s", "--out", "hf"],
        d,
    ));
    let hf_config = std::fs::read_to_string(d.join("hf/config.json")).unwrap();
    assert!(
        hf_config.contains("\"model_type\": \"siglip\""),
        "{hf_config}"
    );
    let _rng = common::rng_lock();
    let loaded = LoadedModel::open(&ckpt, Device::Cpu).unwrap();
    tch::manual_seed(3);
    let px = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
    let ids = Tensor::randint(600, [4, 16], (Kind::Int64, Device::Cpu));
    let cmp = d.join("cmp");
    std::fs::create_dir_all(&cmp).unwrap();
    Tensor::write_safetensors(
        &[("pixel_values", &px), ("input_ids", &ids)],
        cmp.join("inputs.safetensors"),
    )
    .unwrap();
    let ours = our_outputs(&loaded.model, &px, &ids);
    Tensor::write_safetensors(&ours, cmp.join("outputs.safetensors")).unwrap();
    let expect =
        serde_json::json!({"image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]});
    std::fs::write(cmp.join("expect.json"), expect.to_string()).unwrap();
    let report = siglip_parity(&[
        "check",
        d.join("hf").to_str().unwrap(),
        cmp.to_str().unwrap(),
    ]);
    println!("ours -> HF, siglip: {}", report.trim());

    // OpenCLIP's SigLIP layout is not written: the refusal says what to use instead.
    let refused = cliptrain(
        &[
            "export",
            "openclip",
            "--checkpoint",
            "runs/s",
            "--out",
            "oc",
        ],
        d,
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("cliptrain export hf"), "{err}");
}

/// `model.init_from` an HF SigLIP folder (its architecture and dimensions taken from it), a run
/// stopped at step 2 and resumed ends bit-identical to an uninterrupted one.
#[test]
fn siglip_from_an_hf_folder_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    siglip_parity(&["make", d.join("ref").to_str().unwrap()]);
    small_synth(d, 64, 8, 32);
    let model = "[model]\ninit_from = \"ref/hf\"\n";
    std::fs::write(d.join("s.toml"), siglip_toml(model, 4)).unwrap();
    let train = |name: &str, more: &[&str]| {
        let set = format!("run.name={name}");
        let args = [&["train", "--config", "s.toml", "--set", &set][..], more].concat();
        ok(cliptrain(&args, d))
    };
    train("full", &[]);
    train("split", &["--stop-at-step", "2"]);
    train("split", &["--resume", "auto"]);
    let saved = std::fs::read_to_string(d.join("runs/full/latest/config.toml")).unwrap();
    assert!(saved.contains("kind = \"siglip\""), "{saved}");
    let (full, split) = (losses(&d.join("runs/full")), losses(&d.join("runs/split")));
    assert_eq!(full.len(), 4);
    assert_eq!(full, split, "the loss sequence continues exactly");
    let (a, b) = (
        weights(&d.join("runs/full/latest")),
        weights(&d.join("runs/split/latest")),
    );
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs");
    }
    // The imported weights were trained, not replaced by a fresh init.
    let start = read(&d.join("ref/hf/model.safetensors"));
    let probe = &a
        .iter()
        .find(|(n, _)| n == "vision_model.head.probe")
        .unwrap()
        .1;
    let moved = (probe - &start["vision_model.head.probe"])
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        moved > 0.0 && moved < 0.02,
        "the probe moved by {moved} from the import"
    );
}
