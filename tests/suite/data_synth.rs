//! `cliptrain data synth` end to end through the binary: output, determinism and errors.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn synth(out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args(["-q", "data", "synth", "--out"])
        .arg(out)
        .args(["--train", "200", "--eval", "100", "--image-size", "32"])
        .args(extra)
        .env_remove("CLIPTRAIN_LOG")
        .output()
        .expect("run cliptrain")
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn synth_writes_deterministic_shards_and_reports_them() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut outputs = Vec::new();
    for (dir, seed) in dirs.iter().zip(["1", "1", "2"]) {
        let out = synth(dir.path(), &["--seed", seed, "--shard-size", "64"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(stdout);
    }
    let stdout = &outputs[0];
    assert!(stdout.contains("200 train samples"), "{stdout}");
    assert!(stdout.contains("8 held out of training"), "{stdout}");
    let spec = dirs[0].path().join("train-{000000..000003}.tar");
    assert!(stdout.contains(&spec.display().to_string()), "{stdout}");

    let [a, b, c] = [0, 1, 2].map(|i| files(dirs[i].path()));
    let names: Vec<&String> = a.keys().collect();
    assert_eq!(
        names,
        [
            "classes_heldout.txt",
            "classes_seen.txt",
            "classnames.txt",
            "eval-000000.tar",
            "eval-000001.tar",
            "stats.json",
            "templates.txt",
            "train-000000.tar",
            "train-000001.tar",
            "train-000002.tar",
            "train-000003.tar",
        ]
    );
    // Plain `assert!`: a byte-vector diff would flood the output. stats.json names its folder.
    for (name, bytes) in &a {
        if name.ends_with(".tar") || name.ends_with(".txt") {
            assert!(bytes == &b[name], "{name} differs for the same seed");
        }
    }
    assert!(a["train-000000.tar"] != c["train-000000.tar"]);
    assert!(a["eval-000000.tar"] != c["eval-000000.tar"]);
}

#[test]
fn synth_rejects_a_zero_shard_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = synth(dir.path(), &["--shard-size", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shard_size must be at least 1"), "{stderr}");
}
