//! The library's two examples (`examples/*.rs`, built by `cargo test` with the suite) run on
//! generated data: one trains from code, the other evaluates what it wrote.
use crate::common::{ok, small_synth};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A built example: `target/<profile>/examples/NAME`, beside this test binary's `deps/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let path = profile.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is not built (cargo test builds examples; run the suite with cargo test)",
        path.display()
    );
    path
}

#[test]
fn the_examples_train_from_code_and_evaluate_the_checkpoint_zero_shot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_synth(d, 64, 16, 32);
    let trained = ok(Command::new(example("train_from_code"))
        .args([
            "syn/train-{000000..000001}.tar",
            "syn/tok.json",
            "runs",
            "3",
        ])
        .current_dir(d)
        .output()
        .unwrap());
    assert!(trained.contains("plan: device: Cpu"), "{trained}");
    assert!(trained.contains("trained steps 0..3"), "{trained}");
    assert!(
        d.join("runs/from-code/step-0000003/model.safetensors")
            .is_file()
    );

    let evaluated = ok(Command::new(example("zeroshot_from_code"))
        .args([
            "runs/from-code",
            "syn/eval-000000.tar",
            "syn/classnames.txt",
            "syn/templates.txt",
        ])
        .current_dir(d)
        .output()
        .unwrap());
    assert!(
        evaluated.contains("2 text embeddings of dim 64"),
        "{evaluated}"
    );
    assert!(
        evaluated.contains("zero-shot on syn/eval-000000.tar: top-1"),
        "{evaluated}"
    );
    assert!(evaluated.contains("over 48 classes"), "{evaluated}");
}
