//! CLIP_benchmark folders, built-in prompts, multilabel mAP and suites, end to end on a tiny
//! CLIP_benchmark-layout tree made from the synthetic eval split (tests/common/benchmark.rs).
use crate::common;
use crate::common::tiny::two_step;
use crate::common::{cliptrain, ok, small_synth};
use serde_json::Value;
use std::path::Path;

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const SUITE: &str = r#"
[[task]]
name = "cls"
kind = "zeroshot"
data = "cls"

[[task]]
name = "cls-train"
kind = "zeroshot"
data = "cls"
split = "train"
classnames = "../syn/classnames.txt"
templates = "builtin:cifar10"

[[task]]
name = "ret"
kind = "retrieval"
data = "ret"

[[task]]
name = "ml"
kind = "multilabel"
data = "ml"

[[task]]
name = "missing"
kind = "zeroshot"
data = "nowhere"
"#;

#[test]
fn clip_benchmark_folders_score_like_their_shards_and_suites_tabulate_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // One eval shard of 48 samples: every class once.
    small_synth(d, 64, 48, 48);
    common::benchmark::build(d);
    std::fs::write(d.join("bench/suite.toml"), SUITE).unwrap();
    two_step("gelu")
        .sets(&[r#"eval.suite="bench/suite.toml""#, "eval.batch_size=16"])
        .write(d.join("tiny.toml"));
    let out = ok(cliptrain(&["-q", "train", "--config", "tiny.toml"], d));
    assert!(
        out.contains("| cls | zeroshot | 48 | top1 | 2.1% |"),
        "{out}"
    );
    assert!(
        out.contains("failed [1]") && out.contains("nowhere: not a folder"),
        "{out}"
    );

    let eval = |args: &[&str]| {
        let mut a = vec!["-q", "eval"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--checkpoint", "runs/t", "--threads", "2"]);
        ok(cliptrain(&a, d))
    };
    // The same images re-encoded losslessly (webp, png) in two shards: the same figures.
    eval(&[
        "zeroshot",
        "--data",
        "syn/eval-000000.tar",
        "--classnames",
        "syn/classnames.txt",
        "--templates",
        "syn/templates.txt",
        "--json",
        "shard.json",
    ]);
    let table = eval(&["zeroshot", "--data", "bench/cls", "--json", "bench.json"]);
    assert!(table.contains("48 images, 48 classes"), "{table}");
    let (shard, bench) = (
        read_json(&d.join("shard.json")),
        read_json(&d.join("bench.json")),
    );
    for k in [
        "top1",
        "top5",
        "mean_per_class_recall",
        "samples",
        "chance_top1",
    ] {
        assert_eq!(shard[k], bench[k], "{k}");
    }
    assert_eq!(f(&bench["chance_top1"]), 1.0 / 48.0);
    let train = eval(&["zeroshot", "--data", "bench/cls", "--split", "train"]);
    assert!(train.contains("4 images"), "{train}");
    let wrong = cliptrain(
        &[
            "eval",
            "zeroshot",
            "--checkpoint",
            "runs/t",
            "--data",
            "bench/cls",
            "--split",
            "val",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("no split \"val\"") && err.contains("test, train"),
        "{err}"
    );

    // Retrieval: both lines of each .txt are captions of its image.
    let table = eval(&["retrieval", "--data", "bench/ret", "--json", "ret.json"]);
    assert!(table.contains("48 images, 96 captions"), "{table}");
    // Multilabel: mean average precision, its chance level the mean positive rate (2 of 48).
    let table = eval(&["zeroshot", "--data", "bench/ml", "--json", "ml.json"]);
    assert!(table.contains("mean average precision"), "{table}");
    let ml = read_json(&d.join("ml.json"));
    assert_eq!(ml["classes_with_positives"], 48);
    assert!((f(&ml["chance_map"]) - 2.0 / 48.0).abs() < 1e-12);
    assert!((0.0..=1.0).contains(&f(&ml["mean_average_precision"])));
    let mismatch = cliptrain(
        &[
            "eval",
            "retrieval",
            "--checkpoint",
            "runs/t",
            "--data",
            "bench/cls",
        ],
        d,
    );
    assert!(String::from_utf8_lossy(&mismatch.stderr).contains("eval zeroshot"));

    // The suite: one column per checkpoint; the missing folder and the missing checkpoint fail
    // their own cells only, and the exit code says that cells failed (issue 27, item 20).
    let out = cliptrain(
        &[
            "-q",
            "eval",
            "suite",
            "--suite",
            "bench/suite.toml",
            "--checkpoint",
            "runs/t",
            "--checkpoint",
            "runs/none",
            "--threads",
            "2",
            "--json",
            "s.json",
            "--csv",
            "s.csv",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("6 of 10 suite cells (tasks × checkpoints) failed")
            && err.contains("missing on runs/t: bench/nowhere: not a folder"),
        "{err}"
    );
    let table = String::from_utf8(out.stdout).unwrap();
    // The README's example table is this one.
    eprintln!("{table}");
    assert!(
        table.contains("| task | kind | images | metric | chance | runs/t (step 2) | runs/none |"),
        "{table}"
    );
    assert!(
        table.contains("| ret | retrieval | 48 | image_to_text_recall@1 | 2.1% |"),
        "{table}"
    );
    assert!(
        table.contains("| ml | multilabel | 48 | mean_average_precision | 4.2% |"),
        "{table}"
    );
    let s = read_json(&d.join("s.json"));
    let task = |name: &str| {
        s["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    let cls = task("cls");
    assert_eq!(cls["results"][0]["metrics"]["top1"], bench["top1"]);
    assert!((f(&cls["results"][0]["chance"]["top5"]) - 5.0 / 48.0).abs() < 1e-12);
    assert!(
        cls["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("runs/none")
    );
    assert!(
        task("missing")["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("nowhere")
    );
    assert_eq!(task("cls-train")["results"][0]["images"], 4);
    assert_eq!(
        task("ml")["results"][0]["metrics"]["mean_average_precision"],
        ml["mean_average_precision"]
    );
    let csv = std::fs::read_to_string(d.join("s.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "task,kind,metric,checkpoint,step,value,chance,images,error"
    );
    assert_eq!(lines.len(), 1 + (3 + 3 + 4 + 1 + 3) * 2, "{csv}");

    // During training the same figures went to metrics.jsonl under suite/<task>/<metric>.
    let rows: Vec<Value> = std::fs::read_to_string(d.join("runs/t/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = rows.iter().rfind(|r| r["kind"] == "eval").unwrap();
    assert_eq!(last["step"], 2);
    assert_eq!(last["suite/cls/top1"], bench["top1"]);
    assert_eq!(
        last["suite/ret/text_to_image_recall_at_5"],
        task("ret")["results"][0]["metrics"]["text_to_image_recall@5"]
    );
    assert!(last.get("suite/missing/top1").is_none());
}

/// The compiled-in lists are the facts open_clip ships (its templates are lambdas: rendered
/// with `{}` as the class name). open_clip has no CIFAR lists; those are checked for size.
#[test]
fn builtin_prompts_match_open_clip() {
    use cliptrain::eval::prompts::{classnames, templates};
    let script = "import json\nfrom open_clip import zero_shot_metadata as m\n\
        print(json.dumps({'classnames': list(m.IMAGENET_CLASSNAMES),\
        'templates': [t('{}') for t in m.OPENAI_IMAGENET_TEMPLATES],\
        'simple': [t('{}') for t in m.SIMPLE_IMAGENET_TEMPLATES]}))";
    let out = std::process::Command::new(common::venv_python())
        .args(["-c", script])
        .output()
        .unwrap();
    let theirs: Value = serde_json::from_str(&ok(out)).unwrap();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        classnames("builtin:imagenet1k").unwrap(),
        list(&theirs["classnames"])
    );
    assert_eq!(
        templates("builtin:imagenet1k").unwrap(),
        list(&theirs["templates"])
    );
    assert_eq!(
        templates("builtin:imagenet1k-7").unwrap(),
        list(&theirs["simple"])
    );
    assert_eq!(classnames("builtin:cifar100").unwrap().len(), 100);
    let listed = ok(cliptrain(&["eval", "builtins"], Path::new(".")));
    for row in [
        "| builtin:imagenet1k | 1000 | 80 |",
        "| builtin:imagenet1k-7 | 1000 | 7 |",
        "| builtin:cifar10 | 10 | 18 |",
        "| builtin:cifar100 | 100 | 18 |",
    ] {
        assert!(listed.contains(row), "{listed}");
    }
}
