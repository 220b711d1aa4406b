//! The layering rule of docs/architecture.md, checked on the source text: the library floors
//! (`model`, `loss`, `text`, `data`) never reach up into the modules that run jobs.
use crate::common;
use std::path::Path;

const FLOORS: &[&str] = &["src/model", "src/loss.rs", "src/text", "src/data"];
const UPPER: &[&str] = &[
    "train",
    "cli",
    "eval",
    "interop",
    "embed",
    "score",
    "dist",
    "checkpoint",
];

fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn model_loss_text_and_data_never_import_the_layers_above_them() {
    let mut files = Vec::new();
    for floor in FLOORS {
        rust_files(&common::repo().join(floor), &mut files);
    }
    assert!(files.len() > 20, "found only {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for upper in UPPER {
                if line.contains(&format!("crate::{upper}::"))
                    || line.contains(&format!("crate::{upper};"))
                {
                    offences.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "layering broken:\n{}",
        offences.join("\n")
    );
}

#[test]
fn dist_knows_nothing_of_training_state() {
    // Ranks, collectives and the launcher only: which stream position a rank continues, and what
    // a checkpoint holds, are `train`'s and `checkpoint`'s (docs/architecture.md).
    let mut files = Vec::new();
    rust_files(&common::repo().join("src/dist"), &mut files);
    assert!(files.len() >= 5, "found only {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for banned in [
            "crate::checkpoint",
            "crate::data",
            "crate::train",
            "crate::config::Config",
        ] {
            assert!(!text.contains(banned), "{} uses {banned}", file.display());
        }
    }
}
