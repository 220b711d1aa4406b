//! `cliptrain embed` and `cliptrain search` on a tiny trained checkpoint.
mod common;
use cliptrain::embed::Index;
use common::tiny_run::trained_run;
use common::{cliptrain, ok};

#[test]
fn embed_images_and_texts_then_search_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ckpt = trained_run(d, "gelu");
    let out = ok(cliptrain(
        &[
            "embed",
            "--checkpoint",
            "runs/t",
            "--images",
            "syn/eval-000000.tar",
            "--out",
            "img.safetensors",
            "--batch-size",
            "3",
        ],
        d,
    ));
    assert!(out.contains("8 images embedded (16 dims)"), "{out}");
    let index = Index::load(&d.join("img.safetensors")).unwrap();
    assert_eq!(index.kind, "images");
    assert_eq!(index.checkpoint, ckpt);
    assert_eq!(index.keys.len(), 8);
    let norms = index.embeddings.norm_scalaropt_dim(2, [-1], false);
    assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
    let mut unique = index.keys.clone();
    unique.dedup();
    assert_eq!(unique.len(), 8, "{:?}", index.keys);

    let found = ok(cliptrain(
        &[
            "search",
            "--index",
            "img.safetensors",
            "--query",
            "a red circle",
            "-k",
            "3",
        ],
        d,
    ));
    let lines: Vec<&str> = found.lines().collect();
    assert_eq!(lines.len(), 3, "{found}");
    for l in &lines {
        let key = l.split_whitespace().last().unwrap();
        assert!(index.keys.iter().any(|k| k == key), "{l}");
    }

    let texts = "a red circle\n\na blue square\na green triangle\n";
    std::fs::write(d.join("texts.txt"), texts).unwrap();
    ok(cliptrain(
        &[
            "embed",
            "--checkpoint",
            "runs/t",
            "--texts",
            "texts.txt",
            "--out",
            "txt.safetensors",
        ],
        d,
    ));
    let found = ok(cliptrain(
        &[
            "search",
            "--index",
            "txt.safetensors",
            "--query",
            "a blue square",
            "-k",
            "10",
        ],
        d,
    ));
    let first = found.lines().next().unwrap();
    assert!(
        first.starts_with("  1  1.0000  a blue square"),
        "a query finds itself first:\n{found}"
    );
    assert_eq!(found.lines().count(), 3, "k is capped at the index size");

    let err = cliptrain(
        &[
            "search",
            "--index",
            "runs/t/latest/model.safetensors",
            "--query",
            "x",
        ],
        d,
    );
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("not a cliptrain index"), "{msg}");
}
