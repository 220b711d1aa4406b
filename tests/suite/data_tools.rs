//! `cliptrain data synth | build | inspect` through the binary: what one writes, the others read.
use crate::common;
use crate::common::{cliptrain, ok};
use std::path::Path;

fn inspect_json(spec: &str, cwd: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(cliptrain(&["data", "inspect", spec, "--json"], cwd)))
        .expect("inspect --json prints JSON")
}

fn save(img: image::RgbImage, path: &Path) {
    img.save(path).unwrap();
}

#[test]
fn synth_output_inspects_clean() {
    let dir = tempfile::tempdir().unwrap();
    ok(cliptrain(
        &[
            "data",
            "synth",
            "--out",
            "syn",
            "--train",
            "120",
            "--eval",
            "48",
            "--shard-size",
            "50",
        ],
        dir.path(),
    ));
    let r = inspect_json("syn/train-{000000..000002}.tar", dir.path());
    assert_eq!(r["samples_ok"], 120);
    assert_eq!(r["skipped"], serde_json::json!({}));
    assert_eq!(r["shards"].as_array().unwrap().len(), 3);
    assert_eq!(r["shards"][2]["samples"], 20);
    assert_eq!(r["keys"]["jpg"], 120);
    assert_eq!(r["image_width"]["max"], 64.0);
    let e = inspect_json("syn/eval-000000.tar", dir.path());
    assert_eq!(e["keys"]["cls"], 48);
}

#[test]
fn build_from_captions_reports_bad_rows_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("imgs")).unwrap();
    save(
        image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10])),
        &d.join("imgs/red.jpg"),
    );
    save(
        image::RgbImage::from_pixel(300, 100, image::Rgb([10, 10, 200])),
        &d.join("imgs/blue wide.png"),
    );
    std::fs::write(d.join("imgs/broken.jpg"), b"\xff\xd8\xff not really").unwrap();
    std::fs::write(
        d.join("caps.csv"),
        "file,caption\nred.jpg,a red square\n\"blue wide.png\",\"a wide, blue banner\"\nmissing.jpg,gone\nbroken.jpg,broken\n",
    )
    .unwrap();
    let stdout = ok(cliptrain(
        &[
            "data",
            "build",
            "--images",
            "imgs",
            "--captions",
            "caps.csv",
            "--out",
            "shards",
            "--shard-size",
            "1",
            "--max-side",
            "150",
        ],
        d,
    ));
    assert!(
        stdout.contains("wrote 2 of 4 rows into 2 shard(s)"),
        "{stdout}"
    );
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("shards/stats.json")).unwrap()).unwrap();
    assert_eq!(stats["failed"], 2);
    let reasons: Vec<String> = stats["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}", f["line"], f["reason"]))
        .collect();
    assert!(
        reasons[0].starts_with("4 \"cannot read image"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("5 \"image rejected: undecodable_image"),
        "{reasons:?}"
    );
    let r = inspect_json("shards/train-{000000..000001}.tar", d);
    assert_eq!(r["samples_ok"], 2);
    assert_eq!(r["keys"]["json"], 2);
    assert_eq!(
        r["image_width"]["max"], 150.0,
        "the 300-px PNG was downscaled to --max-side"
    );
    assert_eq!(
        r["image_width"]["min"], 40.0,
        "the small JPEG is stored as is"
    );
    let tar = std::fs::read(d.join("shards/train-000001.tar")).unwrap();
    let caption = b"a wide, blue banner";
    assert!(
        tar.windows(caption.len()).any(|w| w == caption),
        "the quoted caption with a comma is kept whole"
    );

    let bad = cliptrain(
        &[
            "data",
            "build",
            "--images",
            "imgs",
            "--captions",
            "nope.csv",
            "--out",
            "x",
        ],
        d,
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("cannot read nope.csv"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn build_from_an_image_folder_makes_labelled_eval_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (class, colour) in [("cat", [250, 0, 0]), ("hot_dog", [0, 250, 0])] {
        std::fs::create_dir_all(d.join("folder").join(class)).unwrap();
        for i in 0..3 {
            save(
                image::RgbImage::from_pixel(20 + i, 20, image::Rgb(colour)),
                &d.join(format!("folder/{class}/{i}.jpg")),
            );
        }
    }
    ok(cliptrain(
        &["data", "build", "--image-folder", "folder", "--out", "ev"],
        d,
    ));
    assert_eq!(
        std::fs::read_to_string(d.join("ev/classnames.txt")).unwrap(),
        "cat\nhot dog\n"
    );
    let r = inspect_json("ev/eval-000000.tar", d);
    assert_eq!(r["samples_ok"], 6);
    assert_eq!(r["keys"]["cls"], 6);
}

#[test]
fn inspect_names_broken_and_missing_shards() {
    let dir = tempfile::tempdir().unwrap();
    ok(cliptrain(
        &[
            "data",
            "synth",
            "--out",
            "syn",
            "--train",
            "40",
            "--eval",
            "8",
            "--shard-size",
            "40",
        ],
        dir.path(),
    ));
    let full = std::fs::read(dir.path().join("syn/train-000000.tar")).unwrap();
    std::fs::write(
        dir.path().join("syn/cut.tar"),
        &full[..full.len() / 2 + 100],
    )
    .unwrap();
    let r = inspect_json("syn/cut.tar::syn/absent.tar", dir.path());
    let shards = r["shards"].as_array().unwrap();
    assert!(shards[0]["samples_ok"].as_u64().unwrap() > 10);
    let error = shards[0]["error"].as_str().unwrap();
    assert!(
        error.contains("cut short") || error.contains("inside a header"),
        "{}",
        shards[0]
    );
    assert!(
        shards[1]["error"]
            .as_str()
            .unwrap()
            .contains("syn/absent.tar"),
        "{}",
        shards[1]
    );
    assert_eq!(r["skipped"]["unreadable_shard"], 1);
    let truncations = r["skipped"]["truncated_member"].as_u64().unwrap_or(0)
        + r["skipped"]["truncated_shard"].as_u64().unwrap_or(0);
    assert_eq!(truncations, 1, "{}", r["skipped"]);
}

#[test]
fn tokenizer_trains_on_captions_read_from_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(cliptrain(
        &[
            "data",
            "synth",
            "--out",
            "syn",
            "--train",
            "200",
            "--eval",
            "8",
            "--shard-size",
            "100",
        ],
        d,
    ));
    ok(cliptrain(
        &[
            "tokenizer",
            "train",
            "--data",
            "syn/train-{000000..000001}.tar",
            "--vocab-size",
            "600",
            "--out",
            "tok.json",
        ],
        d,
    ));
    let ids = ok(cliptrain(
        &[
            "tokenizer",
            "encode",
            "--tokenizer",
            "tok.json",
            "--context-length",
            "16",
            "--json",
            "a red circle",
        ],
        d,
    ));
    let rows: Vec<Vec<i64>> = serde_json::from_str(&ids).unwrap();
    assert_eq!(rows[0].len(), 16);
    assert_eq!(rows[0][0], 598, "SOT is vocab_size - 2");
    assert!(rows[0].contains(&599), "EOT is vocab_size - 1: {rows:?}");
    assert!(
        rows[0][1..4].iter().all(|&t| t > 0 && t < 598),
        "caption words are known tokens: {rows:?}"
    );
}

/// `data inspect` and `bench data` read a run config's `[[data.sources]]` mixture.
#[test]
fn inspect_and_bench_take_a_config_with_a_mixture() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::small_synth(d, 64, 8, 16);
    std::fs::write(
        d.join("mix.toml"),
        r#"
[data]
mode = "resampled"
tokenizer = "syn/tok.json"
shuffle_buffer = 8
[[data.sources]]
name = "first"
train = "syn/train-{000000..000002}.tar"
weight = 3
[[data.sources]]
name = "second"
train = "syn/train-000003.tar"
"#,
    )
    .unwrap();
    let text = ok(cliptrain(&["data", "inspect", "--config", "mix.toml"], d));
    assert!(
        text.contains("source \"first\" (syn/train-{000000..000002}.tar), weight 3 = 75.0%"),
        "{text}"
    );
    let json = ok(cliptrain(
        &["data", "inspect", "--config", "mix.toml", "--json"],
        d,
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["report"]["samples_ok"], 48);
    assert_eq!(sources[1]["report"]["samples_ok"], 16);
    assert_eq!(sources[1]["name"], "second");
    let bench = ok(cliptrain(
        &[
            "bench",
            "data",
            "--config",
            "mix.toml",
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--batches",
            "3",
            "--threads",
            "1",
            "--json",
        ],
        d,
    ));
    let b: serde_json::Value = serde_json::from_str(bench.trim()).unwrap();
    assert_eq!(b["images"], 24);
    assert!(b["images_per_s"].as_f64().unwrap() > 0.0, "{bench}");
}
