//! `cliptrain merge` (WiSE-FT, issue 23 part 5): `(1 − α)·A + α·B` of two models of one
//! architecture in different folder kinds (a cliptrain checkpoint and a Hugging Face folder),
//! α = 0 and 1 bit-identical to the inputs, a sweep that `eval suite` scores in one table, and
//! the refusals (another architecture, α outside [0, 1], one model).
use crate::common::hub_server::fixtures;
use crate::common::{self, cliptrain, ok};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut t = Tensor::read_safetensors(path).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// A copy of the fixture's Hugging Face folder with every weight changed (`0.5·w + 0.1`): the
/// "fine-tuned" B.
fn tuned(d: &Path) -> PathBuf {
    let hf = fixtures().join("hf");
    let out = d.join("tuned");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(&hf).unwrap().flatten() {
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
    }
    let changed: Vec<(String, Tensor)> = tensors(&hf.join("model.safetensors"))
        .into_iter()
        .map(|(n, t)| (n, t * 0.5 + 0.1))
        .collect();
    Tensor::write_safetensors(&changed, out.join("model.safetensors")).unwrap();
    out
}

fn fails(args: &[&str], d: &Path) -> String {
    let out = cliptrain(args, d);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_wise_ft_sweep_interpolates_weights_and_eval_suite_scores_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = common::repo().join("tests/fixtures/checkpoint-per-tensor-adamw/step-0000003");
    let b = tuned(d);
    let printed = ok(cliptrain(
        &[
            "-q",
            "merge",
            "--checkpoint",
            base.to_str().unwrap(),
            "--checkpoint",
            b.to_str().unwrap(),
            "--alpha",
            "0,0.3,1",
            "--out",
            "sweep",
        ],
        d,
    ));
    assert_eq!(printed.lines().count(), 3, "{printed}");
    let a_weights = tensors(&fixtures().join("hf/model.safetensors"));
    let b_weights = tensors(&b.join("model.safetensors"));
    let at = |alpha: &str| tensors(&d.join(format!("sweep/alpha-{alpha}/model.safetensors")));
    let same = |x: &[(String, Tensor)], y: &[(String, Tensor)], what: &str| {
        assert_eq!(x.len(), y.len(), "{what}");
        for ((n, s), (m, t)) in x.iter().zip(y) {
            assert_eq!(n, m, "{what}");
            assert!(s.equal(t), "{what}: {n}");
        }
    };
    same(&at("0"), &a_weights, "alpha 0 is A");
    same(&at("1"), &b_weights, "alpha 1 is B");
    let middle = at("0.3");
    for (((n, m), (_, x)), (_, y)) in middle.iter().zip(&a_weights).zip(&b_weights) {
        let want = x.to_kind(Kind::Double) * 0.7 + y.to_kind(Kind::Double) * 0.3;
        let diff = (m.to_kind(Kind::Double) - want)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "{n}: {diff}");
    }

    // The sweep's folders as the columns of one eval suite table.
    ok(cliptrain(
        &[
            "-q",
            "data",
            "synth",
            "--out",
            "syn",
            "--train",
            "8",
            "--eval",
            "16",
            "--image-size",
            "32",
            "--shard-size",
            "16",
        ],
        d,
    ));
    std::fs::write(
        d.join("suite.toml"),
        "[[task]]\nname = \"shapes\"\nkind = \"zeroshot\"\ndata = \"syn/eval-000000.tar\"\n\
         classnames = \"syn/classnames.txt\"\n",
    )
    .unwrap();
    let table = ok(cliptrain(
        &[
            "-q",
            "eval",
            "suite",
            "--suite",
            "suite.toml",
            "--checkpoint",
            "sweep/alpha-0",
            "--checkpoint",
            "sweep/alpha-0.3",
            "--checkpoint",
            "sweep/alpha-1",
        ],
        d,
    ));
    for col in ["alpha-0", "alpha-0.3", "alpha-1"] {
        assert!(table.contains(col), "{table}");
    }

    // Refusals, each naming what to change.
    let base = base.to_str().unwrap();
    let e = fails(
        &[
            "merge",
            "--checkpoint",
            base,
            "--checkpoint",
            base,
            "--alpha",
            "1.5",
            "--out",
            "x",
        ],
        d,
    );
    assert!(e.contains("--alpha 1.5 must be in [0, 1]"), "{e}");
    let e = fails(
        &[
            "merge",
            "--checkpoint",
            base,
            "--alpha",
            "0.5",
            "--out",
            "x",
        ],
        d,
    );
    assert!(e.contains("exactly two --checkpoint"), "{e}");
    let e = fails(
        &[
            "merge",
            "--checkpoint",
            base,
            "--checkpoint",
            base,
            "--alpha",
            "0.5,0.5",
            "--out",
            "x",
        ],
        d,
    );
    assert!(e.contains("twice"), "{e}");
    // Another architecture: the projections narrowed to 8 (embed_dim 16 → 8).
    let narrow = d.join("narrow");
    std::fs::create_dir_all(&narrow).unwrap();
    for e in std::fs::read_dir(&b).unwrap().flatten() {
        std::fs::copy(e.path(), narrow.join(e.file_name())).unwrap();
    }
    let config = std::fs::read_to_string(narrow.join("config.json")).unwrap();
    let config = config.replace("\"projection_dim\": 16", "\"projection_dim\": 8");
    std::fs::write(narrow.join("config.json"), config).unwrap();
    let cut: Vec<(String, Tensor)> = b_weights
        .iter()
        .map(|(n, t)| match n.ends_with("_projection.weight") {
            true => (n.clone(), t.narrow(0, 0, 8).contiguous()),
            false => (n.clone(), t.shallow_clone()),
        })
        .collect();
    Tensor::write_safetensors(&cut, narrow.join("model.safetensors")).unwrap();
    let e = fails(
        &[
            "merge",
            "--checkpoint",
            base,
            "--checkpoint",
            narrow.to_str().unwrap(),
            "--alpha",
            "0.5",
            "--out",
            "x",
        ],
        d,
    );
    assert!(
        e.contains("different architectures")
            && e.contains("model.embed_dim = 16 in the first, 8 in the second")
            && e.contains("tensor text_projection.weight is [16, 32] in the first, [8, 32]"),
        "{e}"
    );
    assert!(!d.join("x").exists());
}
