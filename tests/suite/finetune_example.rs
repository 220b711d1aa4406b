//! The README's fine-tuning example, end to end on small generated data: a folder of images +
//! captions.csv in a domain the base model never saw → `data build` → zero-shot before →
//! fine-tune with configs/finetune-example.toml → zero-shot after → `export hf`. Fine-tuning
//! must raise zero-shot accuracy on the new domain well above where it started.
use crate::common::{cliptrain, ok, repo};
use serde_json::Value;
use std::path::Path;

/// `cliptrain train --config CONFIG --set ...` in `d`.
fn train(d: &Path, config: &str, sets: &[String]) {
    let config = repo().join(config);
    let mut args = vec!["-q", "train", "--config", config.to_str().unwrap()];
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    ok(cliptrain(&args, d));
}

fn zeroshot(d: &Path, checkpoint: &str, json: &str) -> Value {
    ok(cliptrain(
        &[
            "-q",
            "eval",
            "zeroshot",
            "--checkpoint",
            checkpoint,
            "--data",
            "symbols/eval",
            "--classnames",
            "symbols/classnames.txt",
            "--templates",
            "symbols/templates.txt",
            "--classes-subset",
            "symbols/classes_seen.txt",
            "--json",
            json,
        ],
        d,
    ));
    serde_json::from_str(&std::fs::read_to_string(d.join(json)).unwrap()).unwrap()
}

#[test]
fn fine_tuning_on_a_new_domain_raises_its_zero_shot_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A base model: the demo's recipe, briefly, on the shapes domain.
    ok(cliptrain(
        &[
            "data",
            "synth",
            "--out",
            "shapes",
            "--train",
            "6000",
            "--eval",
            "48",
            "--shard-size",
            "2000",
        ],
        d,
    ));
    ok(cliptrain(
        &[
            "tokenizer",
            "train",
            "--data",
            "shapes/train-{000000..000002}.tar",
            "--vocab-size",
            "1024",
            "--out",
            "shapes/tokenizer.json",
        ],
        d,
    ));
    let common = |name: &str| {
        vec![
            format!("run.name=\"{name}\""),
            "run.output_dir=\"runs\"".into(),
            "optim.batch_size=128".into(),
            "optim.steps=80".into(),
            "log.tensorboard=false".into(),
        ]
    };
    let mut base = common("base");
    base.extend([
        "data.train=\"shapes/train-{000000..000002}.tar\"".into(),
        "data.tokenizer=\"shapes/tokenizer.json\"".into(),
        "eval.zeroshot=\"\"".into(),
    ]);
    train(d, "configs/demo.toml", &base);

    // The user's data: loose images + captions.csv (new shapes, new words), packed by data build.
    ok(cliptrain(
        &[
            "data", "synth", "--domain", "symbols", "--layout", "folder", "--out", "symbols",
            "--train", "4000", "--eval", "480",
        ],
        d,
    ));
    ok(cliptrain(
        &[
            "data",
            "build",
            "--images",
            "symbols/images",
            "--captions",
            "symbols/captions.csv",
            "--out",
            "symbols/shards",
        ],
        d,
    ));
    let before = zeroshot(d, "runs/base", "before.json");

    let mut tune = common("finetune-symbols");
    tune.extend([
        "data.train=\"symbols/shards/train-000000.tar\"".into(),
        "model.init_from=\"runs/base\"".into(),
        "eval.zeroshot=\"symbols/eval\"".into(),
        "eval.classnames=\"symbols/classnames.txt\"".into(),
        "eval.templates=\"symbols/templates.txt\"".into(),
        "eval.classes_subset=\"symbols/classes_seen.txt\"".into(),
        "optim.warmup_steps=10".into(),
    ]);
    train(d, "configs/finetune-example.toml", &tune);
    let after = zeroshot(d, "runs/finetune-symbols", "after.json");

    let top1 = |v: &Value, g: &str| v["groups"][g]["top1"].as_f64().unwrap();
    let chance = after["chance_top1"].as_f64().unwrap();
    eprintln!(
        "symbols zero-shot top-1: before {:.3} (seen {:.3}, held-out {:.3}), after {:.3} (seen {:.3}, held-out {:.3}), chance {chance:.3}",
        top1(&before, "all"),
        top1(&before, "seen"),
        top1(&before, "held_out"),
        top1(&after, "all"),
        top1(&after, "seen"),
        top1(&after, "held_out"),
    );
    assert!(
        top1(&after, "all") > top1(&before, "all") + 0.15,
        "{before}\n{after}"
    );
    assert!(top1(&after, "seen") > 5.0 * chance, "{after}");

    // The fine-tuned model leaves as a Hugging Face folder.
    ok(cliptrain(
        &[
            "-q",
            "export",
            "hf",
            "--checkpoint",
            "runs/finetune-symbols",
            "--out",
            "hf",
        ],
        d,
    ));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        assert!(d.join("hf").join(f).is_file(), "export lacks {f}");
    }
}
