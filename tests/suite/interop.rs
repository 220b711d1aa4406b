//! Interoperability end to end: `export hf` read by transformers, `export openclip` read by
//! open_clip, both imported back bitwise; an OpenCLIP state dict made by open_clip imported with
//! its outputs reproduced; `model.init_from` mismatch reports. The reference side is
//! `scripts/interop_parity.py`, run with the torch venv's python.
use crate::common;
use crate::common::tiny::{trained_checkpoint, trained_run};
use crate::common::{cliptrain, ok};
use cliptrain::config::{Activation, LossKind, ModelConfig};
use cliptrain::interop::{
    LoadedModel, ModelSource, SourceError, SourceKind, hf, openclip, timm_siglip,
};
use cliptrain::model::{ClipModel, LoadMode, ModelError, ModelKind, mlp_width};
use cliptrain::text::TextClean;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor, nn::VarStore};

const TOL: f64 = 1e-4;

fn parity(args: &[&str]) -> String {
    common::reference("interop_parity.py", args)
}

/// Our embeddings with the checkpoint, written to `cmp/` (see [`common::write_comparison`]).
fn write_comparison(ckpt: &Path, cmp: &Path) {
    let _rng = common::rng_lock();
    let loaded = LoadedModel::open(ckpt, Device::Cpu).unwrap();
    let d = loaded.source.config().data;
    let tok = loaded.tokenizer().unwrap();
    common::write_comparison(&loaded.model, &tok, (d.image_mean, d.image_std), cmp);
}

/// Opens `dir` with the one model reader and checks every tensor equals the checkpoint's bit
/// for bit, and that the model, tokenizer and normalisation came along.
fn imports_back_bitwise(dir: &Path, ckpt: &Path, kind: SourceKind) {
    let _rng = common::rng_lock();
    let source = ModelSource::open(dir).unwrap();
    assert_eq!(source.kind, kind);
    let saved = ModelSource::open(ckpt).unwrap();
    assert_eq!(saved.kind, SourceKind::Checkpoint);
    assert_eq!(source.spec, saved.spec, "model read from {}", dir.display());
    assert_eq!(
        source.tokenizer_path.as_deref(),
        Some(dir.join("tokenizer.json").as_path())
    );
    assert_eq!(source.image_mean_std, saved.image_mean_std);
    let (_, tensors) = saved.tensors().unwrap();
    let loaded = source.load(Device::Cpu).unwrap();
    let vars = loaded.vs.variables();
    assert_eq!(vars.len(), tensors.len());
    for (name, t) in &tensors {
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

/// The model encodes `d/inputs.safetensors` into `d/outputs.safetensors` (what open_clip
/// computed) within [`TOL`].
fn assert_reproduces_open_clip(loaded: &LoadedModel, d: &Path, label: &str) {
    let m = &loaded.model;
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
        println!("open_clip -> ours, {label}: {name} max abs diff {diff:.3e}");
        assert!(diff <= TOL, "{label} {name}: {diff} > {TOL}");
    }
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
        let source = ModelSource::open(d).unwrap();
        assert_eq!(source.kind, SourceKind::OpenClip);
        assert_eq!(source.spec.activation, ours);
        assert_eq!(source.spec.vision.heads, 4, "heads = width / head_width");
        // EOT = 98, the largest id, as OpenCLIP's argmax pooling assumes.
        assert_eq!(source.spec.eot_id, 98);
        assert_eq!(
            source.image_mean_std,
            Some(([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]))
        );
        let _rng = common::rng_lock();
        let loaded = source.clone().load(Device::Cpu).unwrap();
        let vs = &loaded.vs;
        assert_reproduces_open_clip(&loaded, d, act);
        let scale = vs.variables()["logit_scale"].double_value(&[]);
        assert!((scale - 2.1).abs() < 1e-6, "logit_scale {scale}");
        // The quick_gelu variant has MLP ratios OpenCLIP truncates (int(64·2.6667) = 170,
        // int(48·3.99) = 191; rounding would give 171 and 192, and the load would not fit).
        let widths = (
            mlp_width(source.spec.vision.width, source.spec.vision.mlp_ratio),
            mlp_width(source.spec.text.width, source.spec.text.mlp_ratio),
        );
        let want = if act == "gelu" {
            (256, 192)
        } else {
            (170, 191)
        };
        assert_eq!(widths, want, "{act}: MLP widths");
        // Exported again, open_clip's own reader finds the same widths.
        let out = d.join("export");
        ok(cliptrain(
            &[
                "export",
                "openclip",
                "--checkpoint",
                d.to_str().unwrap(),
                "--out",
                "export",
            ],
            d,
        ));
        let again = ModelSource::open(&out).unwrap();
        assert_eq!(again.spec, source.spec, "{act}: export → import");
    }
}

/// OpenCLIP's SigLIP (`CustomTextCLIP`: a timm trunk, bidirectional text pooled at the last
/// position), made by open_clip at a test size: it opens as `model.kind = "siglip"` with its
/// dimensions read from the weights and reproduces open_clip's image and text features; mapped
/// back to OpenCLIP's names its tensors are the file's, bitwise; and exporting a trunk timm has
/// no name for is refused, saying why.
#[test]
fn open_clip_siglip_state_dict_reproduces_open_clip_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    parity(&["openclip-siglip-make", d.to_str().unwrap()]);
    let source = ModelSource::open(d).unwrap();
    assert_eq!(source.kind, SourceKind::OpenClip);
    let s = &source.spec;
    assert_eq!(s.kind, ModelKind::Siglip);
    assert_eq!(
        (s.vision.width, s.vision.heads, s.vision.layers),
        (96, 12, 2)
    );
    assert_eq!((s.vision.patch_size, s.vision.image_size), (8, 32));
    assert_eq!(
        s.activation,
        Activation::Gelu,
        "timm's base trunk: exact GELU"
    );
    assert_eq!(s.text.activation, None);
    // OpenCLIP's SigLIP cleans captions with "canonicalize"; a value it lacks is named.
    let config = d.join("open_clip_config.json");
    assert_eq!(
        openclip::read_text_clean(&config).unwrap(),
        Some(TextClean::Canonicalize)
    );
    let bad = d.join("bad-clean.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&bad, text.replace("\"canonicalize\"", "\"shout\"")).unwrap();
    let e = openclip::read_text_clean(&bad).unwrap_err().to_string();
    assert!(e.contains("tokenizer_kwargs.clean = \"shout\""), "{e}");
    let _rng = common::rng_lock();
    let loaded = source.clone().load(Device::Cpu).unwrap();
    let m = &loaded.model;
    assert_reproduces_open_clip(&loaded, d, "SigLIP");
    let bias = m.logit_bias().unwrap().double_value(&[0]);
    assert!((bias + 3.5).abs() < 1e-6, "logit_bias {bias}");
    let original = read(&d.join("open_clip_model.safetensors"));
    let back: HashMap<String, Tensor> = timm_siglip::from_hf(&loaded.named_tensors())
        .into_iter()
        .collect();
    assert_eq!(back.len(), original.len());
    for (n, t) in &original {
        assert_eq!(back[n].size(), t.size(), "{n}");
        assert!(back[n].equal(t), "{n} changed on the way back");
    }
    let out = cliptrain(
        &[
            "export",
            "openclip",
            "--checkpoint",
            d.to_str().unwrap(),
            "--out",
            "again",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("timm's named trunks"),
        "{err}"
    );
    assert!(!d.join("again").exists(), "nothing written on a refusal");
}

/// The OpenCLIP model configs bundled with the reference venv's `open_clip` (144 in 3.3.0),
/// each read as an `open_clip_config.json`: the plain ViT families load — quick_gelu exactly
/// where the name says so, MLP widths as OpenCLIP's `int(width * mlp_ratio)` — and every other
/// family is refused with a message that names what it is. The README's architecture table is
/// this test's rules.
#[test]
fn open_clip_bundled_architectures_load_or_are_refused_by_name() {
    let out = Command::new(common::venv_python())
        .args([
            "-c",
            "import importlib.util, os; \
             print(os.path.join(os.path.dirname(importlib.util.find_spec('open_clip').origin), \
             'model_configs'))",
        ])
        .output()
        .unwrap();
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() > 100,
        "{} configs in {}",
        files.len(),
        dir.display()
    );
    let (mut loaded, mut refused) = (0, 0);
    for path in &files {
        let name = path.file_stem().unwrap().to_str().unwrap();
        let expect_refusal = [
            ("RN", "ResNet"),
            ("coca_", "CoCa"),
            ("EVA", "timm"),
            ("MobileCLIP", "timm"),
            ("PE-Core", "timm"),
            ("ViTamin", "timm"),
            ("convnext", "timm"),
            ("swin", "timm"),
            ("vit_", "timm"),
            ("nllb", "hf_model_name"),
            ("roberta", "hf_model_name"),
            ("xlm-roberta", "hf_model_name"),
            ("mt5", "hf_model_name"),
        ]
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, why)| *why)
        // Its text tower has no projection (proj_type "none").
        .or_else(|| (name == "ViT-SO400M-16-SigLIP-i18n-256").then_some("proj_bias"))
        // Read as SigLIP, which takes its dimensions from the weights beside the config.
        .or_else(|| {
            name.contains("SigLIP")
                .then_some("open_clip_model.safetensors")
        })
        .or_else(|| name.contains("CLIPA").then_some("no_ln_pre"))
        .or_else(|| (name == "ViT-M-16-alt").then_some("LayerScale"));
        let read = cliptrain::interop::openclip::read_config(
            path,
            &path.with_file_name("open_clip_model.safetensors"),
        );
        match (expect_refusal, read) {
            (Some(why), Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains(why), "{name}: {msg:?} does not say {why:?}");
                refused += 1;
            }
            (None, Ok((spec, _))) => {
                let quick = name.ends_with("-quickgelu");
                assert_eq!(spec.activation == Activation::QuickGelu, quick, "{name}");
                let json: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
                for (tower, cfg) in [
                    ("vision_cfg", &spec.vision.width),
                    ("text_cfg", &spec.text.width),
                ] {
                    let ratio = json[tower]["mlp_ratio"].as_f64().unwrap_or(4.0);
                    let (w, r) = match tower {
                        "vision_cfg" => (*cfg, spec.vision.mlp_ratio),
                        _ => (*cfg, spec.text.mlp_ratio),
                    };
                    assert_eq!(
                        mlp_width(w, r),
                        (w as f64 * ratio) as usize,
                        "{name} {tower}: OpenCLIP's int(width * mlp_ratio)"
                    );
                }
                loaded += 1;
            }
            (Some(why), Ok(_)) => panic!("{name} loaded; expected a refusal saying {why:?}"),
            (None, Err(e)) => panic!("{name} was refused: {e}"),
        }
    }
    println!("{loaded} OpenCLIP architectures load, {refused} are refused by name");
    assert!(loaded >= 35, "only {loaded} plain ViT configs loaded");
}

/// A small model's run-config section; `text_width` varies between the two sides of a mismatch.
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

/// In `d`: an HF folder (config.json + model.safetensors) of `small(text_width)`.
fn write_hf_folder(d: &Path, text_width: usize) {
    let _rng = common::rng_lock();
    let spec = small(text_width).spec(49, LossKind::InfoNce);
    let vs = VarStore::new(Device::Cpu);
    let _m = ClipModel::new(&vs.root(), &spec).unwrap();
    std::fs::create_dir_all(d).unwrap();
    vs.save(d.join("model.safetensors")).unwrap();
    std::fs::write(
        d.join("config.json"),
        hf::config_json(&spec, Some(48), 49).unwrap().to_string(),
    )
    .unwrap();
}

#[test]
fn init_from_lists_every_mismatch_and_non_strict_loads_what_fits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _rng = common::rng_lock();
    // An HF folder whose weights have text width 32 ...
    write_hf_folder(d, 32);
    let source = ModelSource::open(d).unwrap();
    assert_eq!(source.spec, small(32).spec(49, LossKind::InfoNce));
    // ... loaded into a model whose text tower is 48 wide.
    let mut target = VarStore::new(Device::Cpu);
    let _t = ClipModel::new(&target.root(), &small(48).spec(49, LossKind::InfoNce)).unwrap();
    let before = target.variables()["vision_model.pre_layrnorm.weight"].copy();
    let err = cliptrain::interop::init_weights(&source, &mut target, true).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, SourceError::InitMismatch(ModelError::Mismatch { path, .. })
            if *path == d.join("model.safetensors")),
        "{msg}"
    );
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
    let report = source.load_into(&mut target, LoadMode::Lenient).unwrap();
    assert_eq!(report.skipped.mismatched.len(), mismatched);
    let file = read(&d.join("model.safetensors"));
    let vars = target.variables();
    assert!(
        vars["vision_model.encoder.layers.1.mlp.fc2.weight"]
            .equal(&file["vision_model.encoder.layers.1.mlp.fc2.weight"])
    );
    assert_eq!(report.loaded, file.len() - mismatched);
    // A folder that is none of the three kinds says what the three kinds are.
    let empty = tempfile::tempdir().unwrap();
    let err = ModelSource::open(empty.path()).unwrap_err().to_string();
    for kind in ["state.json", "config.json", "open_clip_config.json"] {
        assert!(err.contains(kind), "{err}");
    }
}

/// A pretrained folder is evaluated and embedded as it is, without a training step; a folder
/// whose weights do not fit its config.json is refused with the mismatch report.
#[test]
fn commands_take_hugging_face_and_openclip_folders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained_run(d, "quick_gelu");
    ok(cliptrain(
        &["export", "hf", "--checkpoint", "runs/t", "--out", "hf"],
        d,
    ));
    ok(cliptrain(
        &["export", "openclip", "--checkpoint", "hf", "--out", "oc"],
        d,
    ));
    let zeroshot = |model: &str, json: &str| {
        let args = [
            "-q",
            "eval",
            "zeroshot",
            "--checkpoint",
            model,
            "--data",
            "syn/eval-000000.tar",
            "--classnames",
            "syn/classnames.txt",
            "--templates",
            "syn/templates.txt",
            "--json",
            json,
        ];
        ok(cliptrain(&args, d));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join(json)).unwrap()).unwrap();
        v
    };
    let (ckpt, hf) = (zeroshot("runs/t", "c.json"), zeroshot("hf", "h.json"));
    assert_eq!(hf["step"], serde_json::Value::Null);
    assert_eq!(ckpt["step"], 2);
    for key in ["top1", "top5", "samples"] {
        assert_eq!(
            hf[key], ckpt[key],
            "{key}: the HF export scores as its checkpoint"
        );
    }
    let embed = |model: &str, out: &str| {
        let args = [
            "embed",
            "--checkpoint",
            model,
            "--images",
            "syn/eval-000000.tar",
            "--out",
            out,
        ];
        ok(cliptrain(&args, d));
        cliptrain::embed::Index::load(&d.join(out)).unwrap()
    };
    let (from_ckpt, from_oc) = (embed("runs/t", "c.idx"), embed("oc", "o.idx"));
    assert_eq!(from_oc.checkpoint, d.join("oc").canonicalize().unwrap());
    assert_eq!(from_oc.keys, from_ckpt.keys);
    let diff = (&from_oc.embeddings - &from_ckpt.embeddings).abs().max();
    assert!(diff.double_value(&[]) < 1e-5, "{diff}");
    // search re-encodes its query with the OpenCLIP folder the index records.
    let found = ok(cliptrain(
        &[
            "search",
            "--index",
            "o.idx",
            "--query",
            "a red circle",
            "-k",
            "2",
        ],
        d,
    ));
    assert_eq!(found.lines().count(), 2, "{found}");

    // An HF folder whose config.json says text width 48 while its weights are 32 wide.
    write_hf_folder(&d.join("bad"), 32);
    let cfg = hf::config_json(&small(48).spec(49, LossKind::InfoNce), Some(48), 49).unwrap();
    std::fs::write(d.join("bad/config.json"), cfg.to_string()).unwrap();
    let out = cliptrain(
        &[
            "embed",
            "--checkpoint",
            "bad",
            "--texts",
            "syn/classnames.txt",
            "--out",
            "x.idx",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Refused from the safetensors header, before the model is built.
    assert!(
        err.contains("bad/config.json: does not match bad/model.safetensors"),
        "{err}"
    );
    assert!(
        err.contains("text_config.intermediate_size = 192 gives text_model.encoder.layers.0.mlp.fc1.weight the shape [192, 48], the weights have [128, 32]"),
        "{err}"
    );
    // And a folder of none of the three kinds names them.
    let out = cliptrain(
        &[
            "eval",
            "retrieval",
            "--checkpoint",
            "syn",
            "--data",
            "syn/eval-000000.tar",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "Hugging Face CLIP folder (config.json + model.safetensors or pytorch_model.bin)"
        ),
        "{err}"
    );
}

/// `export` into a folder that already holds files it would write is refused, naming them and
/// leaving them as they were; `--force` replaces them. Other files do not matter.
#[test]
fn export_refuses_to_replace_files_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained_run(d, "gelu");
    let export = |kind: &str, more: &[&str]| {
        let args = [
            &["export", kind, "--checkpoint", "runs/t", "--out", "out"],
            more,
        ]
        .concat();
        cliptrain(&args, d)
    };
    std::fs::create_dir_all(d.join("out")).unwrap();
    std::fs::write(d.join("out/README.md"), "mine").unwrap();
    ok(export("openclip", &[]));
    std::fs::write(d.join("out/tokenizer.json"), "edited").unwrap();
    let refused = export("hf", &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "out already has tokenizer.json, tokenizer_config.json, special_tokens_map.json; \
             export does not replace files unless asked: choose another --out, or pass --force"
        ),
        "{stderr}"
    );
    assert!(!d.join("out/config.json").exists(), "nothing written");
    assert_eq!(
        std::fs::read_to_string(d.join("out/tokenizer.json")).unwrap(),
        "edited"
    );
    ok(export("hf", &["--force"]));
    assert!(d.join("out/config.json").is_file());
    assert_ne!(
        std::fs::read_to_string(d.join("out/tokenizer.json")).unwrap(),
        "edited"
    );
}

/// `model.init_from` of the 32 px HF folder with `image_size` written as 64 (and 16) and a
/// shorter `context_length`: the position embeddings are what torch computes independently
/// (`scripts/interop_parity.py resize-pos`), every other tensor is the file's, and the model
/// runs at the new size. Unwritten, the source decides; a longer context or another patch size
/// is refused naming both values.
#[test]
fn init_from_at_another_resolution_resamples_the_position_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _rng = common::rng_lock();
    let hf = d.join("hf");
    write_hf_folder(&hf, 32);
    let expected = d.join("expected.safetensors");
    parity(&[
        "resize-pos",
        hf.to_str().unwrap(),
        expected.to_str().unwrap(),
        "--grids",
        "8,2",
        "--context",
        "6",
    ]);
    let expected = read(&expected);
    let file = read(&hf.join("model.safetensors"));
    let config = |model: &str| {
        let text = format!("[model]\ninit_from = {:?}\n{model}", hf.display());
        cliptrain::config::load_str(&text, &[]).unwrap()
    };
    let vision_pos = "vision_model.embeddings.position_embedding.weight";
    let text_pos = "text_model.embeddings.position_embedding.weight";
    for (size, grid) in [(64, 8), (16, 2)] {
        let cfg = config(&format!(
            // A written patch size equal to the source's is fine (and keeps 16 px valid).
            "[model.vision]\nimage_size = {size}\npatch_size = 8\n[model.text]\ncontext_length = 6\n"
        ));
        let (eff, source) = cliptrain::interop::prepare(&cfg).unwrap();
        let source = source.unwrap();
        let m = &eff.model;
        assert_eq!((m.vision.image_size, m.vision.patch_size), (size, 8));
        assert_eq!((m.text.context_length, m.vision.width), (6, 32));
        let mut vs = VarStore::new(Device::Cpu);
        let model = ClipModel::new(&vs.root(), &m.spec(49, LossKind::InfoNce)).unwrap();
        cliptrain::interop::init_weights(&source, &mut vs, true).unwrap();
        let vars = vs.variables();
        for (name, want) in [
            (vision_pos, &expected[&format!("vision_{grid}")]),
            (text_pos, &expected["text"]),
        ] {
            assert_eq!(vars[name].size(), want.size(), "{name} at {size} px");
            let diff = (&vars[name] - want).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{name} at {size} px differs by {diff}");
        }
        for (name, t) in &file {
            if name != vision_pos && name != text_pos {
                assert!(vars[name].equal(t), "{name} changed");
            }
        }
        let px = Tensor::randn([2, 3, size as i64, size as i64], (Kind::Float, Device::Cpu));
        let features = tch::no_grad(|| model.encode_image(&px));
        assert_eq!(features.size(), [2, 16]);
    }
    // Not written: the source's 32 px and context 8, as for every other dimension.
    let (eff, _) = cliptrain::interop::prepare(&config("")).unwrap();
    assert_eq!(
        (eff.model.vision.image_size, eff.model.text.context_length),
        (32, 8)
    );
    for (model, needles) in [
        (
            "[model.text]\ncontext_length = 12\n",
            ["model.text.context_length = 12", "context length 8"],
        ),
        (
            "[model.vision]\npatch_size = 16\n",
            ["model.vision.patch_size = 16", "patch size is 8"],
        ),
    ] {
        let err = cliptrain::interop::prepare(&config(model))
            .unwrap_err()
            .to_string();
        for n in needles {
            assert!(err.contains(n), "{err}");
        }
    }
}
