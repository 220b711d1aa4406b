//! `cliptrain embed` and `cliptrain search` on a tiny trained checkpoint.
use crate::common::tiny::trained_run;
use crate::common::{cliptrain, ok};
use cliptrain::data::tarstream::{SampleReader, TarEvent};
use cliptrain::data::writer::ShardWriter;
use cliptrain::embed::Index;

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

/// `embed` reads images through the evaluation pipeline, needing nothing but the image: samples
/// without caption or label are embedded, samples without an image are skipped and counted,
/// and a truncated shard is counted too.
#[test]
fn embed_needs_only_images_and_counts_what_it_skips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained_run(d, "gelu");
    let mut reader = SampleReader::new(std::fs::File::open(d.join("syn/eval-000000.tar")).unwrap());
    let mut w = ShardWriter::new(d.join("bare"), "bare", 100).unwrap();
    let mut images = 0;
    while let Some(TarEvent::Sample(s)) = reader.next_event() {
        // Keep only the image member; every third sample keeps only its caption instead.
        let keep = if images % 3 == 2 { "txt" } else { "png" };
        let members: Vec<(&str, &[u8])> = s
            .members
            .iter()
            .filter(|(ext, _)| ext == keep || (keep == "png" && ext == "jpg"))
            .map(|(e, b)| (e.as_str(), b.as_slice()))
            .collect();
        w.write(&s.key, &members).unwrap();
        images += 1;
    }
    w.finish().unwrap();
    assert_eq!(images, 8);
    let whole = std::fs::read(d.join("bare/bare-000000.tar")).unwrap();
    std::fs::write(d.join("bare/broken.tar"), &whole[..700]).unwrap();
    let out = cliptrain(
        &[
            "embed",
            "--checkpoint",
            "runs/t",
            "--images",
            "bare/bare-000000.tar::bare/broken.tar",
            "--out",
            "bare.safetensors",
        ],
        d,
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("6 images embedded"), "{stdout}");
    assert!(stderr.contains("missing_image: 2"), "{stderr}");
    assert!(
        stderr.contains("truncated"),
        "the broken shard is counted: {stderr}"
    );
}
