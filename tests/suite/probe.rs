//! The linear probe against an independent reference: scikit-learn's `LogisticRegression` (in
//! the reference venv) fitted on the very same features with the same penalty.
use crate::common;
use cliptrain::eval::probe::{Features, LogisticRegression, ProbeOptions, linear_probe};
use std::process::Command;
use tch::{Device, Kind, Tensor};

/// Overlapping Gaussian blobs, so the probe is neither perfect nor at chance and the penalty
/// matters.
fn blobs(n: usize, classes: usize, dim: i64, seed: i64) -> Features {
    let _rng = common::rng_lock();
    tch::manual_seed(seed);
    let centres = Tensor::randn([classes as i64, dim], (Kind::Float, Device::Cpu)) * 0.4;
    let y: Vec<i64> = (0..n).map(|i| (i % classes) as i64).collect();
    let x = centres.index_select(0, &Tensor::from_slice(&y))
        + Tensor::randn([n as i64, dim], (Kind::Float, Device::Cpu));
    Features { x, y }
}

#[test]
fn the_probe_matches_sklearn_logistic_regression_on_the_same_features() {
    let dir = tempfile::tempdir().unwrap();
    let (classes, dim) = (5, 16);
    let _rng = common::rng_lock();
    let train = blobs(400, classes, dim, 1);
    let mut test = blobs(300, classes, dim, 1);
    // Same centres (same seed), fresh noise.
    tch::manual_seed(2);
    test.x = &test.x + Tensor::randn([300, dim], (Kind::Float, Device::Cpu)) * 0.5;

    let report = linear_probe(&train, &test, classes, &ProbeOptions::default()).unwrap();
    eprintln!("probe: {report:?}");
    assert!(report.top1 > 0.3 && report.top1 < 0.99, "{report:?}");
    let path = dir.path().join("features.safetensors");
    let label = |y: &[i64]| Tensor::from_slice(y);
    Tensor::write_safetensors(
        &[
            ("train_x", train.x.shallow_clone()),
            ("train_y", label(&train.y)),
            ("test_x", test.x.shallow_clone()),
            ("test_y", label(&test.y)),
        ],
        &path,
    )
    .unwrap();
    // The chosen weight decay, and a weak one where the fit is harder to converge.
    let decays = [report.weight_decay, 1e-4];
    // sklearn minimises C * sum(CE) + |W|^2 / 2, ours mean(CE) + wd/2 |W|^2: C = 1 / (wd N).
    let cs: Vec<String> = decays
        .iter()
        .map(|wd| (1.0 / (wd * train.len() as f64)).to_string())
        .collect();
    let script = r#"
import json, sys
import numpy as np
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression
t = load_file(sys.argv[1])
rows = []
for c in sys.argv[2:]:
    m = LogisticRegression(C=float(c), max_iter=10000, tol=1e-10)
    m.fit(t["train_x"].astype(np.float64), t["train_y"])
    p = m.predict_proba(t["test_x"].astype(np.float64))
    rows.append({"top1": float((p.argmax(1) == t["test_y"]).mean()), "probs": p.ravel().tolist()})
print(json.dumps(rows))
"#;
    let out = Command::new(common::venv_python())
        .args(["-c", script, path.to_str().unwrap()])
        .args(&cs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sk: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (wd, sk) in decays.iter().zip(sk.as_array().unwrap()) {
        let probe = LogisticRegression::fit(&train, classes, *wd, 1000);
        let probs = probe.logits(&test.x).softmax(1, Kind::Double);
        let pred = probs.argmax(1, false);
        let hits = pred
            .eq_tensor(&Tensor::from_slice(&test.y))
            .sum(Kind::Int64);
        let top1 = hits.int64_value(&[]) as f64 / test.len() as f64;
        let sk_top1 = sk["top1"].as_f64().unwrap();
        eprintln!("wd {wd}: sklearn top-1 {sk_top1}, ours {top1}");
        assert!(
            (sk_top1 - top1).abs() <= 0.01,
            "wd {wd}: sklearn {sk_top1} vs {top1}"
        );
        let sk_probs: Vec<f64> = sk["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let ours = Vec::<f64>::try_from(probs.flatten(0, 1)).unwrap();
        let worst = ours
            .iter()
            .zip(&sk_probs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4,
            "wd {wd}: class probabilities differ by up to {worst}"
        );
    }
    assert_eq!(
        report.top1,
        {
            let p = LogisticRegression::fit(&train, classes, report.weight_decay, 1000);
            let hits = p
                .logits(&test.x)
                .argmax(1, false)
                .eq_tensor(&Tensor::from_slice(&test.y));
            hits.sum(Kind::Int64).int64_value(&[]) as f64 / test.len() as f64
        },
        "the report scores the probe refitted on all of train"
    );
}

#[test]
fn linear_probe_and_knn_run_on_clip_benchmark_splits_and_reuse_cached_features() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // An eval shard of 48 samples (every class once) as a CLIP_benchmark folder, and a
    // 2-step model.
    common::small_synth(d, 64, 48, 48);
    common::benchmark::build(d);
    common::tiny::two_step("gelu").write(d.join("tiny.toml"));
    common::ok(common::cliptrain(&["train", "--config", "tiny.toml"], d));
    let eval = |args: &[&str]| {
        let mut a = vec!["eval"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--checkpoint", "runs/t", "--cache-dir", "cache"]);
        common::cliptrain(&a, d)
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(p)).unwrap()).unwrap()
    };

    // k-NN of a split among itself: each image's nearest neighbour is itself.
    let same = [
        "--data",
        "bench/cls",
        "--train-split",
        "test",
        "--split",
        "test",
    ];
    let mut args = vec!["knn", "--k", "1", "--k", "5", "--json", "knn.json"];
    args.extend_from_slice(&same);
    let out = eval(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("48 images encoded at"),
        "{}",
        text(&out.stderr)
    );
    let knn = read("knn.json");
    assert_eq!(knn["knn"][0]["k"], 1);
    assert_eq!(knn["knn"][0]["top1"], 1.0);
    assert_eq!(knn["knn"][0]["test_samples"], 48);
    assert!(text(&out.stdout).contains("| k = 5, T = 0.07 | 48 | 48 | 48 |"));

    // The probe (4 training images, 48 test images) finds the test split's features cached.
    let out = eval(&[
        "linear-probe",
        "--data",
        "bench/cls",
        "--json",
        "probe.json",
        "--shots",
        "1",
        "--shots",
        "2",
        "--weight-decay",
        "1e-3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("bench/cls (test): 48 images, from the cache"),
        "{err}"
    );
    assert!(err.contains("bench/cls (train): 4 images encoded"), "{err}");
    assert!(
        err.contains("1-shot: 44 class(es) have fewer training images"),
        "{err}"
    );
    let probe = read("probe.json");
    let runs = probe["linear_probe"].as_array().unwrap();
    assert_eq!(
        (runs[0]["shots"].as_u64(), runs[1]["shots"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(runs[0]["train_samples"], 4);
    assert_eq!(runs[0]["weight_decay"], 1e-3);
    assert_eq!(runs[0]["classes"], 48);
    assert_eq!(probe["features"][1]["cached"], true);

    // A multilabel set has no single class per image.
    let out = eval(&[
        "linear-probe",
        "--data",
        "bench/ml",
        "--train-split",
        "test",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("multilabel"),
        "{}",
        text(&out.stderr)
    );
}
