//! Class-labelled data as training data (issue 23 part 6, FLYP): `.cls` shards train with
//! captions made from `data.classnames` × `data.templates`, labels without a name are skipped
//! and counted, and `loss.mask_same_class` reaches the loss (the first step's loss changes when
//! a batch holds two samples of one class).
use crate::common::tiny::{losses, tiny};
use crate::common::{cliptrain, ok, small_synth};
use serde_json::Value;
use std::path::Path;

fn last_row(run: &Path) -> Value {
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    log.lines()
        .rev()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["kind"] == "train")
        .unwrap()
}

#[test]
fn labelled_shards_train_with_class_prompts_and_same_class_masking() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 192 eval samples: every one of the 48 classes 4 times, in shards of 64.
    small_synth(d, 64, 192, 64);
    // The last 8 class names left out: their samples are bad labels, skipped and counted.
    let names = std::fs::read_to_string(d.join("syn/classnames.txt")).unwrap();
    let kept: Vec<&str> = names.lines().take(40).collect();
    std::fs::write(d.join("names.txt"), kept.join("\n") + "\n").unwrap();
    std::fs::write(
        d.join("templates.txt"),
        "a photo of a {}.\na drawing of a {}.\n",
    )
    .unwrap();
    let cfg = tiny().sets(&[
        r#"data.train="syn/eval-{000000..000002}.tar""#,
        r#"data.classnames="names.txt""#,
        r#"data.templates="templates.txt""#,
        "data.augment.hflip=0.5",
        "optim.batch_size=16",
        // The eval split lists the classes in turn: a shuffle over all of it mixes them, so
        // batches hold several samples of a class.
        "data.shuffle_buffer=192",
        "optim.steps=2",
        "checkpoint.every=0",
    ]);
    cfg.write(d.join("flyp.toml"));
    let run = |name: &str, mask: bool| {
        let set = [
            format!("run.name={name}"),
            format!("loss.mask_same_class={mask}"),
        ];
        ok(cliptrain(
            &[
                "-q",
                "train",
                "--config",
                "flyp.toml",
                "--set",
                &set[0],
                "--set",
                &set[1],
            ],
            d,
        ));
        d.join("runs").join(name)
    };
    let (plain, masked) = (run("plain", false), run("masked", true));
    let (a, b) = (losses(&plain), losses(&masked));
    assert_eq!(a.len(), 2);
    assert!(
        a.iter().chain(&b).all(|(_, l)| l.is_finite() && *l > 0.0),
        "{a:?} {b:?}"
    );
    // Same seed, same first batch: only the mask differs.
    assert!(
        a[0].1 - b[0].1 > 1e-4,
        "masking same-class pairs removes negatives, so it lowers the loss: {a:?} vs {b:?}"
    );
    let row = last_row(&plain);
    assert!(row["skipped_samples"].as_f64().unwrap() > 0.0, "{row}");
}
