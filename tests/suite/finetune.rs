//! Fine-tuning from a checkpoint with `model.init_from` and `[finetune]`: locked parameters stay
//! bitwise unchanged and get no optimizer state, the tokenizer comes from the source, and a
//! fine-tuning run with LR multipliers resumes exactly.
use crate::common::tiny::trained_run;
use crate::common::{cliptrain, ok};
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn locked_image_tower_and_frozen_temperature_stay_bitwise_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = trained_run(d, "gelu");
    // The model section of tiny.toml is replaced by the checkpoint's; the tokenizer is taken
    // from the checkpoint because data.tokenizer is emptied.
    std::fs::write(
        d.join("ft.toml"),
        r#"
extends = "tiny.toml"
[run]
name = "ft"
[data]
tokenizer = ""
[model]
init_from = "runs/t"
embed_dim = 999
[optim]
steps = 3
lr = 1e-2
[finetune]
lock_image = true
logit_scale = "freeze"
"#,
    )
    .unwrap();
    let effective = ok(cliptrain(&["config", "check", "ft.toml"], d));
    assert!(effective.contains("embed_dim = 16"), "{effective}");
    let out = cliptrain(&["train", "--config", "ft.toml"], d);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(
        stderr.contains("model.embed_dim = 16 (from the source; config had 999)"),
        "the log names each value taken from the source:\n{stderr}"
    );
    let ft = d.join("runs/ft/latest");
    let (before, after) = (
        tensors(&source.join("model.safetensors")),
        tensors(&ft.join("model.safetensors")),
    );
    let mut text_changed = 0;
    for (name, t) in &before {
        let image = name.starts_with("vision_model.") || name.starts_with("visual_projection");
        if image || name == "logit_scale" {
            assert!(after[name].equal(t), "{name} is locked but changed");
        } else if !after[name].equal(t) {
            text_changed += 1;
        }
    }
    assert!(
        text_changed > 10,
        "only {text_changed} text tensors trained"
    );
    let opt = tensors(&ft.join("optimizer.safetensors"));
    assert!(
        opt.keys()
            .all(|k| !k.contains("vision_model.") && k != "exp_avg.logit_scale")
    );
    assert!(opt.contains_key("exp_avg.text_model.final_layer_norm.weight"));
    let saved = std::fs::read_to_string(ft.join("config.toml")).unwrap();
    assert!(
        saved.contains(&format!(
            "tokenizer = \"{}\"",
            source.join("tokenizer.json").display()
        )),
        "{saved}"
    );
    assert!(saved.contains("embed_dim = 16"), "{saved}");
}

#[test]
fn a_fine_tuning_run_with_lr_multipliers_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained_run(d, "quick_gelu");
    std::fs::write(
        d.join("ld.toml"),
        r#"
extends = "tiny.toml"
[run]
name = "full"
[model]
init_from = "runs/t"
[optim]
steps = 4
[finetune]
lock_text = true
unlocked_text_layers = 1
text_lr_scale = 0.5
image_layer_decay = 0.6
text_layer_decay = 0.8
logit_scale = "reset"
"#,
    )
    .unwrap();
    ok(cliptrain(&["train", "--config", "ld.toml"], d));
    let split = ["train", "--config", "ld.toml", "--set", "run.name=split"];
    ok(cliptrain(
        &[&split[..], &["--stop-at-step", "2"]].concat(),
        d,
    ));
    ok(cliptrain(&[&split[..], &["--resume", "auto"]].concat(), d));
    let full = tensors(&d.join("runs/full/latest/model.safetensors"));
    let resumed = tensors(&d.join("runs/split/latest/model.safetensors"));
    for (name, t) in &full {
        assert!(resumed[name].equal(t), "{name} differs after resume");
    }
    let source = tensors(&d.join("runs/t/latest/model.safetensors"));
    let l0 = "text_model.encoder.layers.0.mlp.fc1.weight";
    let l1 = "text_model.encoder.layers.1.mlp.fc1.weight";
    assert!(full[l0].equal(&source[l0]), "locked text block 0 changed");
    assert!(
        !full[l1].equal(&source[l1]),
        "unlocked text block 1 did not train"
    );
}
