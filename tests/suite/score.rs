//! `cliptrain data score` (issue 24 part 1): open_clip's own CLIP scores of the same pairs on
//! the same weights within 1e-4, two `--part`s covering every sample once, a rerun that scores
//! only what is missing, and the refusals (another model's folder, an empty part).
use crate::common::hub_server::fixtures;
use crate::common::{self, cliptrain, ok};
use std::collections::BTreeMap;
use std::path::Path;

/// A shard of `n` 32 px PNG images (lossless: both sides decode the same pixels) with captions.
fn write_shard(path: &Path, n: usize, offset: usize) {
    let words = [
        "red", "blue", "green", "circle", "square", "small", "big", "star",
    ];
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let k = i + offset;
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let v = (x * 7 + y * 13 + k as u32 * 29) as u8;
            image::Rgb([v, v.wrapping_mul(3), (x * y) as u8 ^ k as u8])
        });
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let caption = format!("a {} {}", words[k % 8], words[(k / 3) % 8]);
        for (ext, bytes) in [("png", png), ("txt", caption.into_bytes())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("{k:04}.{ext}"), bytes.as_slice())
                .unwrap();
        }
    }
    tar.finish().unwrap();
}

fn rows(dir: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "jsonl") {
            for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let key = v["key"].as_str().unwrap().to_string();
                assert!(
                    out.insert(key, v["score"].as_f64().unwrap()).is_none(),
                    "a key twice"
                );
            }
        }
    }
    out
}

#[test]
fn scores_match_open_clip_split_in_parts_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("cmp")).unwrap();
    write_shard(&d.join("cmp/shard.tar"), 12, 0);
    write_shard(&d.join("b.tar"), 7, 100);
    let model = fixtures().join("openclip");
    let m = model.to_str().unwrap();
    let spec = "cmp/shard.tar::b.tar";
    let score = |out: &str, more: &[&str]| {
        let args = [
            &["-q", "data", "score", spec, "--checkpoint", m, "--out", out][..],
            more,
        ]
        .concat();
        cliptrain(&args, d)
    };
    // Two parts into one folder: each shard once.
    let p0 = ok(score("s", &["--part", "0/2", "--embeddings"]));
    assert!(p0.contains("scored 12 samples in 1 shard(s)"), "{p0}");
    let p1 = ok(score("s", &["--part", "1/2", "--embeddings"]));
    assert!(p1.contains("scored 7 samples in 1 shard(s)"), "{p1}");
    let all = rows(&d.join("s"));
    assert_eq!(all.len(), 19);
    let emb = tch::Tensor::read_safetensors(d.join("s/000001.safetensors")).unwrap();
    assert_eq!(emb[0].1.size(), vec![7, 16]);

    // A rerun scores only what is missing; what was written stays as it was.
    let first = std::fs::read(d.join("s/000000.jsonl")).unwrap();
    std::fs::remove_file(d.join("s/000001.jsonl")).unwrap();
    let again = ok(score("s", &["--embeddings"]));
    assert!(
        again.contains("scored 7 samples in 1 shard(s)")
            && again.contains("1 shard(s) were complete already"),
        "{again}"
    );
    assert_eq!(std::fs::read(d.join("s/000000.jsonl")).unwrap(), first);
    assert_eq!(rows(&d.join("s")), all);

    // open_clip scores the same pairs the same.
    let mut part0 = String::new();
    for line in String::from_utf8(first).unwrap().lines() {
        part0.push_str(line);
        part0.push('\n');
    }
    std::fs::write(d.join("cmp/scores.jsonl"), part0).unwrap();
    let report = common::reference(
        "interop_parity.py",
        &[
            "score-check",
            m,
            d.join("cmp").to_str().unwrap(),
            "--tol",
            "1e-4",
        ],
    );
    println!("cliptrain data score vs open_clip: {}", report.trim());

    // Refusals: another model into the same folder; a part with no shard.
    let other = fixtures().join("hf");
    let out = cliptrain(
        &[
            "data",
            "score",
            spec,
            "--checkpoint",
            other.to_str().unwrap(),
            "--out",
            "s",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the folder holds scores with checkpoint"),
        "{err}"
    );
    let out = score("t", &["--part", "2/3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--part 2/3"), "{err}");
    let out = score("t", &["--part", "3/3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("write i/n with 0 <= i < n"));
    // A model that cannot encode the captions (no tokenizer) is refused before any shard is
    // read, and leaves no scores.
    let bare = d.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["open_clip_config.json", "open_clip_model.safetensors"] {
        std::fs::copy(model.join(f), bare.join(f)).unwrap();
    }
    let out = cliptrain(
        &[
            "data",
            "score",
            spec,
            "--checkpoint",
            bare.to_str().unwrap(),
            "--out",
            "u",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has no tokenizer"),
        "{err}"
    );
    assert!(!d.join("u/000000.jsonl").exists());
}

/// A `data score` folder written by hand: scores chosen so the rules' effect is known exactly.
fn fake_scores(dir: &Path, shard: &str, scores: &[(String, f64)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("score.json"), "{}").unwrap();
    let lines: Vec<String> = scores
        .iter()
        .map(|(k, s)| serde_json::json!({"key": k, "shard": shard, "score": s}).to_string())
        .collect();
    std::fs::write(dir.join("000000.jsonl"), lines.join("\n") + "\n").unwrap();
}

fn members(tar_path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        out.insert(name, bytes);
    }
    out
}

#[test]
fn filter_keeps_the_top_fraction_byte_for_byte_and_counts_every_drop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_shard(&d.join("a.tar"), 20, 0);
    // Scores rise with the key; keys 0 and 1 are missing from the scores.
    let scores: Vec<(String, f64)> = (2..20)
        .map(|k| (format!("{k:04}"), k as f64 / 100.0))
        .collect();
    fake_scores(&d.join("s"), "a.tar", &scores);
    let printed = ok(cliptrain(
        &[
            "-q",
            "data",
            "filter",
            "a.tar",
            "--scores",
            "s",
            "--keep-fraction",
            "0.25",
            "--min-words",
            "3",
            "--out",
            "kept",
            "--shard-size",
            "3",
        ],
        d,
    ));
    // Top quarter of 18 scores: ceil(4.5) = 5 samples, keys 15..19 (score >= 0.15); all
    // captions have 3 words ("a W W").
    assert!(
        printed.contains("kept 5 of 20 samples in 2 shard(s)"),
        "{printed}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("kept/stats.json")).unwrap()).unwrap();
    assert_eq!(stats["dropped"]["low_score"], 13, "{stats}");
    assert_eq!(stats["dropped"]["unscored"], 2, "{stats}");
    assert!((stats["threshold"].as_f64().unwrap() - 0.15).abs() < 1e-6);
    assert!(d.join("kept/scores.png").is_file());
    let source = members(&d.join("a.tar"));
    let mut kept = members(&d.join("kept/train-000000.tar"));
    kept.extend(members(&d.join("kept/train-000001.tar")));
    let names: Vec<&String> = kept.keys().collect();
    assert_eq!(names.len(), 10, "{names:?}");
    for (name, bytes) in &kept {
        assert!(name.as_str() >= "0015", "{name} should have been dropped");
        assert_eq!(&source[name], bytes, "{name} changed");
    }

    // Caption and size rules, without scores; and the refusals.
    let printed = ok(cliptrain(
        &[
            "-q",
            "data",
            "filter",
            "a.tar",
            "--min-words",
            "4",
            "--out",
            "none",
        ],
        d,
    ));
    assert!(
        printed.contains("kept 0 of 20") && printed.contains("dropped 20: few_words"),
        "{printed}"
    );
    let printed = ok(cliptrain(
        &[
            "-q",
            "data",
            "filter",
            "a.tar",
            "--min-side",
            "33",
            "--out",
            "small",
        ],
        d,
    ));
    assert!(printed.contains("dropped 20: small_image"), "{printed}");
    for (args, want) in [
        (
            vec!["--keep-fraction", "1.5", "--scores", "s"],
            "--keep-fraction 1.5 must be in (0, 1]",
        ),
        (vec!["--min-score", "0.2"], "need --scores"),
        (vec!["--scores", "kept"], "has no score.json"),
        (vec!["--min-words", "1"], "is not empty"),
    ] {
        let out_dir = if want == "is not empty" { "kept" } else { "x" };
        let all = [&["data", "filter", "a.tar", "--out", out_dir][..], &args].concat();
        let out = cliptrain(&all, d);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
}
