//! Evaluation end to end, and its honesty checks: a trained checkpoint scores far above chance
//! on labels it never trained on, while a random model and shuffled labels score near chance;
//! evaluating during training leaves training bit-for-bit unchanged; bad inputs get errors
//! that name the file or sample.
use crate::common;
use crate::common::{cliptrain, ok, repo, small_synth};
use cliptrain::data::tarstream::{SampleReader, TarEvent};
use cliptrain::data::writer::ShardWriter;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Every sample of a shard, as (key, members).
/// A sample as (key, members (extension, bytes)).
type Sample = (String, Vec<(String, Vec<u8>)>);

fn samples(shard: &Path) -> Vec<Sample> {
    let mut r = SampleReader::new(std::fs::File::open(shard).unwrap());
    let mut out = Vec::new();
    while let Some(ev) = r.next_event() {
        match ev {
            TarEvent::Sample(s) => out.push((s.key, s.members)),
            other => panic!("unexpected {other:?} in {}", shard.display()),
        }
    }
    out
}

fn write_shard(dir: &Path, prefix: &str, rows: &[Sample]) -> PathBuf {
    let mut w = ShardWriter::new(dir, prefix, 1 << 20).unwrap();
    for (key, members) in rows {
        let m: Vec<(&str, &[u8])> = members
            .iter()
            .map(|(e, b)| (e.as_str(), b.as_slice()))
            .collect();
        w.write(key, &m).unwrap();
    }
    w.finish().unwrap();
    dir.join(ShardWriter::shard_name(prefix, 0))
}

fn zeroshot(d: &Path, ckpt: &str, data: &str, json: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "-q",
        "eval",
        "zeroshot",
        "--checkpoint",
        ckpt,
        "--data",
        data,
        "--classnames",
        "syn/classnames.txt",
        "--templates",
        "syn/templates.txt",
        "--classes-subset",
        "syn/classes_seen.txt",
        "--threads",
        "2",
        "--json",
        json,
    ];
    args.extend_from_slice(extra);
    let table = ok(cliptrain(&args, d));
    assert!(table.contains("| held-out | 8 |"), "{table}");
    read_json(&d.join(json))
}

/// The demo's recipe (configs/demo.toml, fewer steps) on a smaller synthetic set; then the
/// three honesty checks against the same eval split.
#[test]
fn trained_checkpoint_beats_chance_where_random_weights_and_shuffled_labels_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(cliptrain(
        &[
            "data",
            "synth",
            "--out",
            "syn",
            "--train",
            "8000",
            "--eval",
            "960",
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
            "syn/train-{000000..000003}.tar",
            "--vocab-size",
            "1024",
            "--out",
            "syn/tokenizer.json",
        ],
        d,
    ));
    let demo = repo().join("configs/demo.toml");
    let train = |name: &str, steps: &str, lr: &str| {
        let sets = [
            format!("run.name=\"{name}\""),
            "run.output_dir=\"runs\"".to_string(),
            "data.train=\"syn/train-{000000..000003}.tar\"".to_string(),
            "data.tokenizer=\"syn/tokenizer.json\"".to_string(),
            "eval.zeroshot=\"\"".to_string(),
            "log.tensorboard=false".to_string(),
            format!("optim.steps={steps}"),
            format!("optim.lr={lr}"),
            format!("optim.warmup_steps={}", if steps == "1" { 0 } else { 50 }),
        ];
        let mut args = vec!["-q", "train", "--config", demo.to_str().unwrap()];
        for s in &sets {
            args.extend(["--set", s.as_str()]);
        }
        ok(cliptrain(&args, d));
    };
    // One step at a learning rate of 1e-9 leaves the initial weights as they were in effect.
    train("random", "1", "1e-9");
    train("trained", "150", "1e-3");

    let data = "syn/eval-000000.tar";
    let trained = zeroshot(d, "runs/trained", data, "trained.json", &[]);
    let random = zeroshot(d, "runs/random", data, "random.json", &[]);
    let chance = trained["chance_top1"].as_f64().unwrap();
    assert!((chance - 1.0 / 48.0).abs() < 1e-12);
    let top1 = |v: &Value, group: &str| v["groups"][group]["top1"].as_f64().unwrap();
    eprintln!(
        "trained: seen {:.3} held-out {:.3}; random: all {:.3}",
        top1(&trained, "seen"),
        top1(&trained, "held_out"),
        top1(&random, "all")
    );
    assert!(top1(&trained, "seen") > 0.5, "{trained}");
    assert!(top1(&trained, "held_out") > 3.0 * chance, "{trained}");
    assert!(top1(&random, "all") < 3.0 * chance, "{random}");
    assert!(
        random["top5"].as_f64().unwrap() < 3.0 * 5.0 * chance,
        "{random}"
    );

    // An independent computation (transformers CLIPModel on the same weights, PIL/torchvision
    // preprocessing, plain torch maths) agrees within half a point overall.
    let reference = std::process::Command::new(common::venv_python())
        .arg(repo().join("scripts/zeroshot_reference.py"))
        .args([
            "runs/trained/latest",
            "--data",
            data,
            "--classnames",
            "syn/classnames.txt",
        ])
        .args(["--templates", "syn/templates.txt", "--classes-subset"])
        .args(["syn/classes_seen.txt", "--json", "reference.json"])
        .current_dir(d)
        .output()
        .unwrap();
    ok(reference);
    let reference = read_json(&d.join("reference.json"));
    for k in ["top1", "top5"] {
        let (ours, theirs) = (trained[k].as_f64().unwrap(), reference[k].as_f64().unwrap());
        assert!(
            (ours - theirs).abs() <= 0.005,
            "{k}: ours {ours}, reference {theirs}"
        );
    }
    for g in ["seen", "held_out"] {
        let samples = reference["groups"][g]["samples"].as_f64().unwrap();
        let (ours, theirs) = (
            top1(&trained, g),
            reference["groups"][g]["top1"].as_f64().unwrap(),
        );
        assert!(
            (ours - theirs).abs() * samples <= 2.5,
            "{g}: ours {ours}, reference {theirs}"
        );
    }

    // The same images with their labels permuted among them: the model is as good as before,
    // but the answers no longer mean anything, and the score must fall to chance.
    let mut rows = samples(&d.join(data));
    let mut labels: Vec<Vec<u8>> = rows
        .iter()
        .map(|(_, m)| m.iter().find(|(e, _)| e == "cls").unwrap().1.clone())
        .collect();
    let mut state = 12345u64;
    for i in (1..labels.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        labels.swap(i, (state >> 33) as usize % (i + 1));
    }
    for ((_, members), label) in rows.iter_mut().zip(labels) {
        members.iter_mut().find(|(e, _)| e == "cls").unwrap().1 = label;
    }
    std::fs::create_dir_all(d.join("shuffled")).unwrap();
    write_shard(&d.join("shuffled"), "eval", &rows);
    let shuffled = zeroshot(
        d,
        "runs/trained",
        "shuffled/eval-000000.tar",
        "shuffled.json",
        &[],
    );
    assert!(
        shuffled["top1"].as_f64().unwrap() < 3.0 * chance,
        "{shuffled}"
    );

    // The same split as an ImageFolder gives exactly the shards' figures.
    let classes: Vec<String> = std::fs::read_to_string(d.join("syn/classnames.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    for (key, members) in samples(&d.join(data)) {
        let get = |ext: &str| &members.iter().find(|(e, _)| e == ext).unwrap().1;
        let label: usize = String::from_utf8_lossy(get("cls")).trim().parse().unwrap();
        let dir = d.join("folder").join(classes[label].replace(' ', "_"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{key}.jpg")), get("jpg")).unwrap();
    }
    let folder = zeroshot(
        d,
        "runs/trained",
        "folder",
        "folder.json",
        &["--plot", "cm.png"],
    );
    for k in ["top1", "top5", "mean_per_class_recall", "samples"] {
        assert_eq!(folder[k], trained[k], "{k}");
    }
    let png = std::fs::read(d.join("cm.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // The JSON carries what the issue names, per class and per group.
    for k in [
        "top1",
        "top5",
        "mean_per_class_recall",
        "per_class",
        "groups",
    ] {
        assert!(!trained[k].is_null(), "missing {k}");
    }
    assert_eq!(trained["per_class"].as_object().unwrap().len(), 48);
    assert_eq!(trained["per_class"]["red square"]["samples"], 20);
}

/// The tiny config (only the last checkpoint) as the run `name` in `NAME.toml`, with `eval`
/// (TOML: an `[eval]` section) merged in.
fn tiny(d: &Path, name: &str, eval: &str) -> PathBuf {
    let path = d.join(format!("{name}.toml"));
    common::tiny::tiny()
        .sets(&[&format!("run.name={name:?}"), "checkpoint.every=0"])
        .merge(eval)
        .write(&path);
    path
}

fn jsonl(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn evaluating_during_training_changes_nothing_and_is_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_synth(d, 96, 48, 32);
    let plain = tiny(d, "plain", "");
    let with_eval = tiny(
        d,
        "evald",
        r#"[eval]
every = 2
zeroshot = "syn/eval-000000.tar"
classnames = "syn/classnames.txt"
templates = "syn/templates.txt"
classes_subset = "syn/classes_seen.txt"
retrieval = "syn/eval-000000.tar"
batch_size = 16"#,
    );
    ok(cliptrain(
        &["-q", "train", "--config", plain.to_str().unwrap()],
        d,
    ));
    let out = ok(cliptrain(
        &["-q", "train", "--config", with_eval.to_str().unwrap()],
        d,
    ));
    assert!(out.contains("evaluation at step 6"), "{out}");
    assert!(
        out.contains("| seen | 40 |") && out.contains("| image → text |"),
        "{out}"
    );

    let (a, b) = (jsonl(&d.join("runs/plain")), jsonl(&d.join("runs/evald")));
    let train_rows = |rows: &[Value]| -> Vec<(u64, f64)> {
        rows.iter()
            .filter(|r| r["kind"] == "train")
            .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(train_rows(&a), train_rows(&b));
    let evals: Vec<&Value> = b.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(
        evals
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 4, 6]
    );
    for k in [
        "zeroshot_top1",
        "zeroshot_seen_top1",
        "zeroshot_held_out_top5",
        "retrieval_image_to_text_recall_at_1",
        "retrieval_text_to_image_recall_at_10",
    ] {
        let v = evals[2][k].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    let wa = std::fs::read(d.join("runs/plain/latest/model.safetensors")).unwrap();
    let wb = std::fs::read(d.join("runs/evald/latest/model.safetensors")).unwrap();
    assert!(wa == wb, "evaluation changed the trained weights");

    // The standalone command on the same checkpoint gives the numbers logged at step 6.
    let standalone = zeroshot(d, "runs/evald", "syn/eval-000000.tar", "z.json", &[]);
    assert_eq!(
        standalone["top1"].as_f64(),
        evals[2]["zeroshot_top1"].as_f64()
    );
    assert_eq!(
        standalone["groups"]["held_out"]["top5"].as_f64(),
        evals[2]["zeroshot_held_out_top5"].as_f64()
    );

    // Several captions per image (numbered members): every caption is a query, any of an
    // image's captions counts as a hit for it.
    let rows: Vec<Sample> = samples(&d.join("syn/eval-000000.tar"))
        .into_iter()
        .take(10)
        .map(|(key, mut m)| {
            let first = m.iter().find(|(e, _)| e == "txt").unwrap().1.clone();
            m.push(("1.txt".into(), b"another caption".to_vec()));
            m.push(("2.txt".into(), first));
            (key, m)
        })
        .collect();
    std::fs::create_dir_all(d.join("multi")).unwrap();
    write_shard(&d.join("multi"), "cap", &rows);
    let table = ok(cliptrain(
        &[
            "-q",
            "eval",
            "retrieval",
            "--checkpoint",
            "runs/evald",
            "--data",
            "multi/cap-000000.tar",
            "--json",
            "r.json",
        ],
        d,
    ));
    assert!(table.contains("10 images, 30 captions"), "{table}");
    let r = read_json(&d.join("r.json"));
    assert_eq!(
        (r["images"].as_u64(), r["texts"].as_u64()),
        (Some(10), Some(30))
    );
    // Ten images: the top 10 holds every image, so text→image Recall@10 is 1.
    assert_eq!(r["text_to_image"]["recall@10"].as_f64(), Some(1.0));
}

fn fails_with(d: &Path, args: &[&str], needles: &[&str]) {
    let out = cliptrain(args, d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure: {args:?}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

#[test]
fn bad_evaluation_inputs_name_the_file_or_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_synth(d, 96, 48, 32);
    let cfg = tiny(d, "t", "");
    ok(cliptrain(
        &[
            "-q",
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "optim.steps=2",
        ],
        d,
    ));
    let base = |classnames: &str, extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "eval",
            "zeroshot",
            "--checkpoint",
            "runs/t",
            "--data",
            "syn/eval-000000.tar",
            "--classnames",
            classnames,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>, needles: &[&str]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(d, &a, needles);
    };
    // Fewer classes than the labels in the shard: the sample and the fix are named.
    std::fs::write(d.join("few.txt"), "red circle\nred square\n").unwrap();
    run(
        base("few.txt", &[]),
        &["sample 000000002", "has label", "lists 2 classes"],
    );
    std::fs::write(d.join("blank.txt"), "red circle\n\nred square\n").unwrap();
    run(base("blank.txt", &[]), &["blank.txt line 2", "empty"]);
    std::fs::write(d.join("tpl.txt"), "a photo of a {}.\na photo\n").unwrap();
    run(
        base("syn/classnames.txt", &["--templates", "tpl.txt"]),
        &["tpl.txt line 2", "no {}"],
    );
    std::fs::write(d.join("subset.txt"), "red circle\nunicorn\n").unwrap();
    run(
        base("syn/classnames.txt", &["--classes-subset", "subset.txt"]),
        &["subset.txt", "\"unicorn\" is not in the classnames file"],
    );
    std::fs::create_dir_all(d.join("imgs/red_circle")).unwrap();
    std::fs::create_dir_all(d.join("imgs/mystery")).unwrap();
    let mut a = base("syn/classnames.txt", &[]);
    a[5] = "imgs".into();
    run(
        a.clone(),
        &["imgs", "mystery", "match no line of the classnames file"],
    );
    // A class listed twice is ambiguous for an ImageFolder (folder names are looked up); label
    // indexed sets allow it (OpenAI's ImageNet list repeats two names).
    std::fs::write(d.join("dup.txt"), "a\nb\na\n").unwrap();
    a[7] = "dup.txt".into();
    run(a, &["\"a\" appears twice", "ImageFolder"]);
    run(
        vec![
            "eval".into(),
            "retrieval".into(),
            "--checkpoint".into(),
            "syn".into(),
            "--data".into(),
            "syn/eval-000000.tar".into(),
        ],
        &["syn", "not a cliptrain checkpoint"],
    );
    // A typo in the run's [eval] section stops training before the first step (the preflight
    // names the key and the file).
    let bad = tiny(
        d,
        "b",
        "[eval]\nzeroshot = \"syn/eval-000000.tar\"\nclassnames = \"nope.txt\"",
    );
    fails_with(
        d,
        &["train", "--config", bad.to_str().unwrap()],
        &["eval.classnames", "nope.txt"],
    );
    assert!(!d.join("runs/b").join("latest").exists());
}
