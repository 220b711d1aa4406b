//! `optim.ema_decay` (issue 23 part 4): the moving average of the weights against the
//! recursion over every step's saved weights, saved beside them and exactly resumed, evaluated
//! during training (`ema/...` metrics), and chosen by `--ema` in `eval` and `export`.
use crate::common::tiny::{setup_with, tiny, train_named, weights};
use crate::common::{cliptrain, ok};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

fn named(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn the_weight_average_is_kept_saved_resumed_evaluated_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = tiny().sets(&[
        "optim.ema_decay=0.8",
        "checkpoint.every=1",
        r#"eval.zeroshot="syn/eval-000000.tar""#,
        r#"eval.classnames="syn/classnames.txt""#,
        "eval.every=3",
    ]);
    setup_with(d, &cfg);
    let train = |name: &str, more: &[&str]| train_named(d, name, more);
    train("t", &[]);
    train("init", &["--stop-at-step", "0"]);

    // ema_k = 0.8·ema_(k-1) + 0.2·w_k from the initial weights, over the 6 steps' checkpoints.
    let run = d.join("runs/t");
    let mut expected: HashMap<String, Tensor> = weights(&d.join("runs/init/latest"))
        .into_iter()
        .map(|(n, t)| (n, t.to_kind(Kind::Double)))
        .collect();
    for step in 1..=6 {
        let w = weights(&run.join(format!("step-{step:07}")));
        for (n, t) in w {
            let e = expected.get_mut(&n).unwrap();
            *e = &*e * 0.8 + t.to_kind(Kind::Double) * 0.2;
        }
    }
    let ema = named(&run.join("latest/ema.safetensors"));
    assert_eq!(ema.len(), expected.len());
    let mut largest = 0f64;
    for (n, e) in &expected {
        let diff = (ema[n].to_kind(Kind::Double) - e)
            .abs()
            .max()
            .double_value(&[]);
        largest = largest.max(diff);
        assert!(diff < 1e-5, "{n}: {diff}");
    }
    eprintln!("EMA vs the recursion over saved weights: max |diff| {largest:.2e}");

    // Stopped at step 2 and resumed: the same average as the uninterrupted run.
    train("split", &["--stop-at-step", "2"]);
    train("split", &["--resume", "auto"]);
    let resumed = named(&d.join("runs/split/latest/ema.safetensors"));
    for (n, t) in &ema {
        assert!(resumed[n].equal(t), "{n} differs after resume");
    }

    // Evaluated beside the weights, in the same rows.
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evals: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "eval")
        .collect();
    assert_eq!(evals.len(), 2, "{log}");
    for r in &evals {
        assert!(r["ema/zeroshot_top1"].is_number(), "{r}");
        assert!(r["zeroshot_top1"].is_number(), "{r}");
    }

    // --ema: eval and export read ema.safetensors.
    let latest = run.join("latest");
    let latest = latest.to_str().unwrap();
    ok(cliptrain(
        &[
            "-q",
            "export",
            "hf",
            "--checkpoint",
            latest,
            "--out",
            "ema-hf",
            "--ema",
        ],
        d,
    ));
    let exported = named(&d.join("ema-hf/model.safetensors"));
    for (n, t) in &exported {
        assert!(t.equal(&ema[n]), "{n}: the export is not the average");
    }
    // eval --ema scores what the run logged for the average at its last step.
    ok(cliptrain(
        &[
            "-q",
            "eval",
            "zeroshot",
            "--checkpoint",
            latest,
            "--data",
            "syn/eval-000000.tar",
            "--classnames",
            "syn/classnames.txt",
            "--ema",
            "--json",
            "ema.json",
        ],
        d,
    ));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("ema.json")).unwrap()).unwrap();
    assert_eq!(report["top1"], evals[1]["ema/zeroshot_top1"], "{report}");
    // embed --ema encodes with the average: as its export does, unlike the weights.
    std::fs::write(d.join("texts.txt"), "a red square\na small blue circle\n").unwrap();
    let embed = |model: &str, out: &str, more: &[&str]| {
        let args = [
            &[
                "-q",
                "embed",
                "--checkpoint",
                model,
                "--texts",
                "texts.txt",
                "--out",
                out,
            ][..],
            more,
        ]
        .concat();
        ok(cliptrain(&args, d));
        named(&d.join(out))["embeddings"].shallow_clone()
    };
    let averaged = embed(latest, "a.safetensors", &["--ema"]);
    let via_export = embed("ema-hf", "b.safetensors", &[]);
    let plain = embed(latest, "c.safetensors", &[]);
    let diff = |x: &Tensor, y: &Tensor| (x - y).abs().max().double_value(&[]);
    assert!(diff(&averaged, &via_export) < 1e-6);
    assert!(
        diff(&averaged, &plain) > 1e-4,
        "the average is another model"
    );

    // A checkpoint without an average, and a decay that is no average.
    let init =
        crate::common::repo().join("tests/fixtures/checkpoint-per-tensor-adamw/step-0000003");
    let out = cliptrain(
        &[
            "export",
            "hf",
            "--checkpoint",
            init.to_str().unwrap(),
            "--out",
            "x",
            "--ema",
        ],
        d,
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("has no EMA weights"),
        "{e}"
    );
    let out = cliptrain(
        &["config", "check", "tiny.toml", "--set", "optim.ema_decay=1"],
        d,
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("optim.ema_decay = 1 must be 0 (no EMA) or in (0, 1)"),
        "{e}"
    );
}
