//! Hostile evaluation inputs (issue 27, items 8, 9, 10, 13, 17): a CLIP_benchmark folder whose
//! `nshards.txt` or `classnames.txt` would size an allocation, multilabel `.npy` headers that
//! lie about their dtype or shape, a search index whose tensor is not `[N, D]` float, and a probe
//! whose training split lacks classes. Each ends in an error naming the file (exit 1, no panic),
//! or in figures that say what they are over.
use crate::common::{self, cliptrain, ok};
use cliptrain::data::writer::ShardWriter;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

/// The stderr of a command that must have failed cleanly with exit code 1.
fn refused(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `dir/test/0.tar` holding one sample `key` with `members`, and `nshards.txt` = 1.
fn one_shard_split(dir: &Path, key: &str, members: &[(&str, &[u8])]) {
    let split = dir.join("test");
    let tmp = dir.join("w");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut w = ShardWriter::new(&tmp, "s", usize::MAX).unwrap();
    w.write(key, members).unwrap();
    w.finish().unwrap();
    std::fs::create_dir_all(&split).unwrap();
    std::fs::rename(
        tmp.join(ShardWriter::shard_name("s", 0)),
        split.join("0.tar"),
    )
    .unwrap();
    std::fs::remove_dir_all(tmp).unwrap();
    std::fs::write(split.join("nshards.txt"), "1\n").unwrap();
}

#[test]
fn a_shard_count_beyond_the_files_present_is_refused_before_any_path_is_built() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // 10^12 once died allocating 24 TB of shard paths; now it is compared with the one .tar.
    one_shard_split(&d.join("bench"), "s0", &[("cls", &b"0"[..])]);
    std::fs::write(d.join("bench/test/nshards.txt"), "1000000000000\n").unwrap();
    std::fs::write(d.join("bench/classnames.txt"), "a\nb\n").unwrap();
    for cmd in [
        &[
            "eval",
            "zeroshot",
            "--data",
            "bench",
            "--checkpoint",
            "none",
        ][..],
        &[
            "eval",
            "linear-probe",
            "--data",
            "bench",
            "--train-split",
            "test",
        ][..],
    ] {
        let mut args = cmd.to_vec();
        if cmd[1] == "linear-probe" {
            args.extend(["--checkpoint", "none"]);
        }
        let err = refused(cliptrain(&args, d));
        assert!(
            err.contains("test/nshards.txt says 1000000000000 shards")
                && err.contains("holds 1 .tar file(s)"),
            "{err}"
        );
    }
}

/// An index file as `cliptrain embed` writes one, but with `embeddings` of `dtype` and `shape`.
fn index_file(path: &Path, dtype: safetensors::Dtype, shape: &[usize], keys: usize) {
    let bytes = vec![0u8; shape.iter().product::<usize>() * dtype.size()];
    let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), &bytes).unwrap();
    let keys: Vec<String> = (0..keys).map(|i| format!("k{i}")).collect();
    let meta: HashMap<String, String> = [
        ("format".to_string(), cliptrain::embed::FORMAT.to_string()),
        ("keys".to_string(), serde_json::to_string(&keys).unwrap()),
        ("checkpoint".to_string(), "none".to_string()),
    ]
    .into();
    safetensors::tensor::serialize_to_file([("embeddings", view)], &Some(meta), path).unwrap();
}

#[test]
fn search_refuses_an_index_whose_embeddings_are_not_rows_of_floats() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (name, dtype, shape, says) in [
        ("flat", safetensors::Dtype::F32, vec![3], "has shape [3]"),
        ("ints", safetensors::Dtype::I64, vec![3, 4], "is Int64"),
    ] {
        let file = format!("{name}.safetensors");
        index_file(&d.join(&file), dtype, &shape, 3);
        let err = refused(cliptrain(
            &["search", "--index", &file, "--query", "a cat"],
            d,
        ));
        assert!(
            err.contains(&file) && err.contains("tensor `embeddings`") && err.contains(says),
            "{err}"
        );
    }
}

/// A `.npy` with header dict `dict` followed by `data`.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let header = format!("{dict}\n");
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// One small trained model for the cases that need one: a 48-image CLIP_benchmark tree (48
/// classes; the train split holds 4 images) and its 2-step run `runs/t`.
#[test]
fn hostile_labels_class_lists_and_train_splits_with_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::small_synth(d, 64, 48, 48);
    common::benchmark::build(d);
    common::tiny::two_step("gelu").write(d.join("tiny.toml"));
    ok(cliptrain(&["train", "--config", "tiny.toml"], d));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let eval = |args: &[&str]| {
        let mut a = vec!["eval"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--checkpoint", "runs/t", "--batch-size", "64"]);
        cliptrain(&a, d)
    };

    // Item 10: multilabel .npy headers whose dtype panicked the reader, or whose shape wrapped
    // the size check (2^62 + 48 float32 = 192 bytes after wrapping).
    let names = std::fs::read_to_string(d.join("bench/ml/classnames.txt")).unwrap();
    let wrapped = format!("{{'descr': '<f4', 'shape': ({},), }}", (1u64 << 62) + 48);
    for (set, header, says) in [
        (
            "npy-e",
            "{'descr': '\u{e9}4', 'shape': (48,), }",
            "unsupported dtype",
        ),
        (
            "npy-f0",
            "{'descr': '<f0', 'shape': (48,), }",
            "unsupported dtype",
        ),
        ("npy-wrap", wrapped.as_str(), "overflow"),
    ] {
        let dir = d.join("bench").join(set);
        one_shard_split(&dir, "s0", &[("npy", &npy(header, &[0u8; 192])[..])]);
        std::fs::write(dir.join("classnames.txt"), &names).unwrap();
        std::fs::write(dir.join("dataset_type.txt"), "multilabel\n").unwrap();
        let err = refused(eval(&["zeroshot", "--data", &format!("bench/{set}")]));
        assert!(
            err.contains(&format!("bench/{set}/test/0.tar: sample s0: its .npy"))
                && err.contains(says),
            "{err}"
        );
    }

    // Item 9: 2000 class names (over the default cap of 1000) for 48 images. The confusion is
    // kept as the pairs that occurred (10^4 names once made 10^8 cells: 5.2 GB and a 901 MB
    // JSON); the dense matrix is left out and --plot refused.
    let many: String = (0..2_000).map(|i| format!("thing {i}\n")).collect();
    std::fs::write(d.join("many.txt"), many).unwrap();
    std::fs::write(d.join("one-template.txt"), "a photo of a {}.\n").unwrap();
    let many_args = [
        "zeroshot",
        "--data",
        "bench/cls",
        "--classnames",
        "many.txt",
        "--templates",
        "one-template.txt",
    ];
    let mut plot = many_args.to_vec();
    plot.extend(["--plot", "cm.png"]);
    let err = refused(eval(&plot));
    assert!(
        err.contains("2000 × 2000 confusion matrix")
            && err.contains("--confusion-max-classes 1000"),
        "{err}"
    );
    assert!(!d.join("cm.png").exists());
    let mut json = many_args.to_vec();
    json.extend(["--json", "many.json"]);
    let out = eval(&json);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("`confusion_matrix` is left out"),
        "{}",
        text(&out.stderr)
    );
    let bytes = std::fs::read(d.join("many.json")).unwrap();
    assert!(bytes.len() < 1_000_000, "{} bytes", bytes.len());
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(v.get("confusion_matrix").is_none());
    let pairs = v["confusion"].as_array().unwrap();
    let counted: u64 = pairs.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!((v["classes"].as_u64(), counted), (Some(2_000), 48));
    // Within the cap the dense matrix is there, as before.
    let out = eval(&["zeroshot", "--data", "bench/cls", "--json", "cls.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(d.join("cls.json")).unwrap()).unwrap();
    assert_eq!(v["confusion_matrix"].as_array().map(Vec::len), Some(48));

    // Item 17: the train split holds 4 images of 48 classes; the probe says so and scores the
    // test images of those 4 classes apart.
    let out = eval(&[
        "linear-probe",
        "--data",
        "bench/cls",
        "--no-cache",
        "--weight-decay",
        "1e-3",
        "--json",
        "probe.json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("44 of 48 classes have no image in the training split")
            && err.contains("and 39 more"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(d.join("probe.json")).unwrap()).unwrap();
    let run = &v["linear_probe"][0];
    assert_eq!(
        run["classes_without_training_images"]
            .as_array()
            .map(Vec::len),
        Some(44)
    );
    assert_eq!(run["test_samples_classes_with_training_images"], 4);
    let within = run["top1_classes_with_training_images"].as_f64().unwrap();
    let all = run["top1"].as_f64().unwrap();
    assert!(all <= 4.0 / 48.0 + 1e-12, "{all}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "linear: top-1 {:.1}% over the 4 classes with training images (4 test images), \
             {:.1}% over all 48; 44 classes had none",
            100.0 * within,
            100.0 * all
        )),
        "{stdout}"
    );
}
