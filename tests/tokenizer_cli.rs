//! `cliptrain tokenizer train` and `cliptrain tokenizer encode` end to end.
use std::process::{Command, Output};

fn cliptrain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args(args)
        .env_remove("CLIPTRAIN_LOG")
        .output()
        .expect("run cliptrain")
}

#[test]
fn train_then_encode_json() {
    let dir = tempfile::tempdir().unwrap();
    let captions = dir.path().join("captions.txt");
    std::fs::write(
        &captions,
        "A dog running on the beach\n\nTwo cats &amp; a café\nthe old man sitting near a garden\n",
    )
    .unwrap();
    let out = dir.path().join("tokenizer.json");
    let (captions, out) = (captions.to_str().unwrap(), out.to_str().unwrap());
    let train = cliptrain(&[
        "tokenizer",
        "train",
        "--captions",
        captions,
        "--vocab-size",
        "540",
        "--out",
        out,
    ]);
    let stderr = String::from_utf8_lossy(&train.stderr);
    assert!(train.status.success(), "{stderr}");
    assert!(
        stderr.contains("540 ids") && stderr.contains("from 3 captions"),
        "{stderr}"
    );

    let encode = cliptrain(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        out,
        "--context-length",
        "8",
        "--json",
        "a dog",
        "",
    ]);
    assert!(
        encode.status.success(),
        "{}",
        String::from_utf8_lossy(&encode.stderr)
    );
    let rows: Vec<Vec<i64>> = serde_json::from_slice(&encode.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.len() == 8 && r[0] == 538));
    assert_eq!(rows[1], [538, 539, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn missing_files_are_named() {
    let train = cliptrain(&[
        "tokenizer",
        "train",
        "--captions",
        "/nonexistent/c.txt",
        "--out",
        "/tmp/x.json",
    ]);
    assert!(!train.status.success());
    assert!(String::from_utf8_lossy(&train.stderr).contains("/nonexistent/c.txt"));
    let encode = cliptrain(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        "/nonexistent/t.json",
        "x",
    ]);
    assert!(!encode.status.success());
    assert!(String::from_utf8_lossy(&encode.stderr).contains("/nonexistent/t.json"));
}
