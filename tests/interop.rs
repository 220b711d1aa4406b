//! Interoperability end to end: `export hf` read by transformers, `export openclip` read by
//! open_clip, both imported back bitwise; an OpenCLIP state dict made by open_clip imported with
//! its outputs reproduced; `model.init_from` mismatch reports. The reference side is
//! `scripts/interop_parity.py`, run with the torch venv's python.
mod common;
use cliptrain::config::{Activation, LossKind, ModelConfig};
use cliptrain::eval::LoadedModel;
use cliptrain::interop::{InitSource, InteropError, SavedModel, SourceKind, hf};
use cliptrain::model::ClipModel;
use common::tiny_run::trained_checkpoint;
use common::{cliptrain, ok};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use tch::{Device, Kind, Tensor, nn::VarStore};

const TOL: f64 = 1e-4;

/// Runs `scripts/interop_parity.py` and returns its stdout; a failure shows both streams.
fn parity(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/interop_parity.py");
    let out = Command::new(common::venv_python())
        .arg(&script)
        .args(args)
        .output()
        .expect("running the venv python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/interop_parity.py {args:?} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const CAPTIONS: [&str; 4] = [
    "a red circle",
    "two blue squares left of a small green triangle",
    "",
    "a big yellow star above a purple circle next to an orange square and a red triangle",
];

/// Our embeddings of random images and `CAPTIONS` with the checkpoint, written to `cmp/` with
/// what the reference must find (ids, size, mean, std, EOT).
fn write_comparison(ckpt: &Path, cmp: &Path) {
    std::fs::create_dir_all(cmp).unwrap();
    let saved = SavedModel::open(ckpt).unwrap();
    let loaded = LoadedModel::load(ckpt, Device::Cpu).unwrap();
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let ids = Tensor::from_slice(&tok.encode_batch(&CAPTIONS).unwrap()).view([4, 16]);
    let px = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
    let out = tch::no_grad(|| model.forward(&px, &ids));
    let inputs = [("pixel_values", px), ("input_ids", ids)];
    Tensor::write_safetensors(&inputs, cmp.join("inputs.safetensors")).unwrap();
    let outputs = [
        ("image_embeds", out.image_embeds),
        ("text_embeds", out.text_embeds),
    ];
    Tensor::write_safetensors(&outputs, cmp.join("outputs.safetensors")).unwrap();
    std::fs::write(
        cmp.join("captions.json"),
        serde_json::to_string(&CAPTIONS).unwrap(),
    )
    .unwrap();
    let expect = serde_json::json!({
        "context_length": 16, "eot": tok.eot_id(), "image_size": 32,
        "mean": saved.config.data.image_mean, "std": saved.config.data.image_std,
    });
    std::fs::write(cmp.join("expect.json"), expect.to_string()).unwrap();
}

/// Imports `dir` with `model.init_from`'s reader and checks every tensor equals the
/// checkpoint's bit for bit, and that the dimensions and tokenizer came along.
fn imports_back_bitwise(dir: &Path, ckpt: &Path, kind: SourceKind) {
    let source = InitSource::open(dir).unwrap();
    assert_eq!(source.kind, kind);
    let saved = SavedModel::open(ckpt).unwrap();
    let mut want = saved.config.model.clone();
    want.init_from = String::new();
    want.init_strict = true;
    assert_eq!(source.model, want, "dimensions read from {}", dir.display());
    assert_eq!(
        source.tokenizer.as_deref(),
        Some(dir.join("tokenizer.json").as_path())
    );
    assert_eq!(
        source.image_mean_std,
        Some((saved.config.data.image_mean, saved.config.data.image_std))
    );
    let mut vs = VarStore::new(Device::Cpu);
    let _m = ClipModel::new(&vs.root(), &source.model, saved.eot_id(), LossKind::InfoNce).unwrap();
    let report = source.load_into(&mut vs, true).unwrap();
    let vars = vs.variables();
    assert_eq!(report.loaded, saved.tensors.len());
    for (name, t) in &saved.tensors {
        assert!(vars[name].equal(t), "{name} changed in the round trip");
    }
}

#[test]
fn hf_export_is_read_by_transformers_and_imports_back_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ckpt = trained_checkpoint(d, "quick_gelu");
    let out = ok(cliptrain(
        &["export", "hf", "--checkpoint", "runs/t", "--out", "hf"],
        d,
    ));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "preprocessor_config.json",
    ] {
        assert!(
            d.join("hf").join(f).is_file(),
            "{f} missing; printed:\n{out}"
        );
    }
    write_comparison(&ckpt, &d.join("cmp"));
    let hf = d.join("hf");
    let report = parity(&[
        "hf-check",
        hf.to_str().unwrap(),
        d.join("cmp").to_str().unwrap(),
    ]);
    println!("cliptrain -> transformers: {}", report.trim());
    imports_back_bitwise(&hf, &ckpt, SourceKind::HuggingFace);
    // The folder transformers' own save_pretrained writes imports bitwise too.
    imports_back_bitwise(&d.join("cmp/resaved"), &ckpt, SourceKind::HuggingFace);
}

#[test]
fn openclip_export_is_read_by_open_clip_and_imports_back_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ckpt = trained_checkpoint(d, "gelu");
    ok(cliptrain(
        &[
            "export",
            "openclip",
            "--checkpoint",
            "runs/t",
            "--out",
            "oc",
        ],
        d,
    ));
    write_comparison(&ckpt, &d.join("cmp"));
    let oc = d.join("oc");
    let report = parity(&[
        "openclip-check",
        oc.to_str().unwrap(),
        d.join("cmp").to_str().unwrap(),
    ]);
    println!("cliptrain -> open_clip: {}", report.trim());
    imports_back_bitwise(&oc, &ckpt, SourceKind::OpenClip);
}

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn open_clip_state_dict_reproduces_open_clip_outputs() {
    for (act, ours) in [
        ("gelu", Activation::Gelu),
        ("quick_gelu", Activation::QuickGelu),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        parity(&["openclip-make", d.to_str().unwrap(), "--act", act]);
        let source = InitSource::open(d).unwrap();
        assert_eq!(source.kind, SourceKind::OpenClip);
        assert_eq!(source.model.activation, ours);
        assert_eq!(source.model.vision.heads, 4, "heads = width / head_width");
        assert_eq!(
            source.image_mean_std,
            Some(([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]))
        );
        let mut vs = VarStore::new(Device::Cpu);
        // EOT = 98, the largest id, as OpenCLIP's argmax pooling assumes.
        let m = ClipModel::new(&vs.root(), &source.model, 98, LossKind::InfoNce).unwrap();
        source.load_into(&mut vs, true).unwrap();
        let inputs = read(&d.join("inputs.safetensors"));
        let reference = read(&d.join("outputs.safetensors"));
        let (img, txt) = tch::no_grad(|| {
            (
                m.encode_image(&inputs["pixel_values"]),
                m.encode_text(&inputs["input_ids"]),
            )
        });
        for (name, t) in [("image_features", img), ("text_features", txt)] {
            let diff = (&t - &reference[name]).abs().max().double_value(&[]);
            println!("open_clip -> ours, {act}: {name} max abs diff {diff:.3e}");
            assert!(diff <= TOL, "{name}: {diff} > {TOL}");
        }
        let scale = vs.variables()["logit_scale"].double_value(&[]);
        assert!((scale - 2.1).abs() < 1e-6, "logit_scale {scale}");
    }
}

fn small(text_width: usize) -> ModelConfig {
    let mut m = ModelConfig {
        embed_dim: 16,
        ..Default::default()
    };
    (m.vision.image_size, m.vision.patch_size) = (32, 8);
    (m.vision.width, m.vision.layers, m.vision.heads) = (32, 2, 2);
    (m.text.vocab_size, m.text.context_length) = (50, 8);
    (m.text.width, m.text.layers, m.text.heads) = (text_width, 1, 2);
    m
}

#[test]
fn init_from_lists_every_mismatch_and_non_strict_loads_what_fits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An HF folder whose weights have text width 32 ...
    let vs = VarStore::new(Device::Cpu);
    let _m = ClipModel::new(&vs.root(), &small(32), 49, LossKind::InfoNce).unwrap();
    vs.save(d.join("model.safetensors")).unwrap();
    let cfg = hf::config_json(&small(32), 49, 48, 49);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let source = InitSource::open(d).unwrap();
    assert_eq!(source.model, small(32));
    // ... loaded into a model whose text tower is 48 wide.
    let mut target = VarStore::new(Device::Cpu);
    let _t = ClipModel::new(&target.root(), &small(48), 49, LossKind::InfoNce).unwrap();
    let before = target.variables()["vision_model.pre_layrnorm.weight"].copy();
    let err = source.load_into(&mut target, true).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, InteropError::Mismatch { .. }), "{msg}");
    assert!(msg.contains("init_strict = false"), "{msg}");
    assert!(
        msg.contains(
            "shape of text_model.embeddings.token_embedding.weight: model expects [50, 48], file has [50, 32]"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("shape of text_projection.weight: model expects [16, 48], file has [16, 32]"),
        "{msg}"
    );
    let mismatched = msg.matches("shape of").count();
    // Every text-tower tensor (2 embeddings, 16 per layer, 2 final LN) and the projection.
    assert_eq!(mismatched, 2 + 16 + 2 + 1, "{msg}");
    assert!(
        target.variables()["vision_model.pre_layrnorm.weight"].equal(&before),
        "a strict failure writes nothing"
    );
    // Not strict: the image tower and logit_scale load, the text tower keeps its init.
    let report = source.load_into(&mut target, false).unwrap();
    assert_eq!(report.skipped.mismatched.len(), mismatched);
    let file = read(&d.join("model.safetensors"));
    let vars = target.variables();
    assert!(
        vars["vision_model.encoder.layers.1.mlp.fc2.weight"]
            .equal(&file["vision_model.encoder.layers.1.mlp.fc2.weight"])
    );
    assert_eq!(report.loaded, file.len() - mismatched);
    // A folder that is none of the three kinds says what it expects.
    let empty = tempfile::tempdir().unwrap();
    let err = InitSource::open(empty.path()).unwrap_err().to_string();
    assert!(err.contains("open_clip_config.json"), "{err}");
}
