//! Hostile input of issue 27 (items 12 and 18-21): a checkpoint's `state.json` edited to numbers
//! no run could save, mixtures that overflow or starve, an evaluation suite whose tasks fail, a
//! model folder without a tokenizer. Each must end in a clear error (or a warning) naming the
//! file, field or source — never a panic, a hang, a silent exit 0 or a wrong figure.
use crate::common::tiny::setup;
use crate::common::{cliptrain, ok};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;

/// The stderr of a command that must have failed cleanly with exit code `code`.
fn refused(out: Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Copies the checkpoint folder `from` to `run/<its name>` with `state.json` edited by `edit`
/// and no manifest (as an older checkpoint has none; its sizes and CRCs would give the edit
/// away as damage before its numbers are read).
pub fn edited_checkpoint(from: &Path, run: &Path, edit: impl FnOnce(&mut Value)) {
    let to = run.join(from.file_name().unwrap());
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "manifest.json" {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    let path = to.join("state.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

const FP16: &[&str] = &[
    "--set",
    "run.precision=fp16",
    "--set",
    "run.loss_scale=1024",
];

/// `cliptrain train` of `tiny.toml` in fp16 as run `name`, with `extra` arguments.
fn fp16_train(d: &Path, name: &str, extra: &[&str]) -> Output {
    let name = format!("run.name={name:?}");
    let mut args = vec!["train", "--config", "tiny.toml", "--set", &name];
    args.extend(FP16);
    args.extend(extra);
    cliptrain(&args, d)
}

#[test]
fn every_number_of_a_checkpoints_state_is_checked_before_resuming() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // One fp16 step: a checkpoint with a data position inside a shard and a loss scale.
    ok(fp16_train(d, "base", &["--stop-at-step", "1"]));
    let ckpt = d.join("runs/base/step-0000001");
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, &[&str])] = &[
        (
            "cursor",
            |v| v["ranks"][0]["cursor"] = json!(1_000_000_000u64),
            &["ranks[0].cursor = 1000000000: rank 0 of 1 reads 3 of the 3 shard(s)"],
        ),
        (
            "hugescale",
            |v| v["loss_scale"]["scale"] = json!(1e300),
            &["loss_scale.scale = 1e300: an fp16 loss scale must be finite"],
        ),
        (
            "zeroscale",
            |v| v["loss_scale"]["scale"] = json!(0.0),
            &["loss_scale.scale = 0e0", "at least 2^-24"],
        ),
        (
            "goodsteps",
            |v| v["loss_scale"]["good_steps"] = json!(u32::MAX),
            &["loss_scale.good_steps = 4294967295: the count restarts at 0"],
        ),
        (
            "replay",
            |v| v["ranks"][0]["replay"] = json!(u64::MAX / 2),
            &["ranks[0].replay = 9223372036854775807: the loader reads at most one batch (8)"],
        ),
        (
            "counters",
            |v| {
                v["step"] = json!(u64::MAX);
                v["bad_steps_in_a_row"] = json!(7);
                v["seed"] = json!(4);
            },
            &[
                "step = 18446744073709551615: more than any run reaches",
                "samples_seen = ",
                "bad_steps_in_a_row = 7: more than bad_steps_total = 0",
                "seed = 4: the run (and the checkpoint's config.toml) has run.seed = 3",
            ],
        ),
        (
            "buffer",
            |v| v["ranks"][0]["buffer"] = json!([{"epoch": 0, "cursor": 5, "offset": 0}]),
            &["ranks[0].buffer[0] = ", "its shard read 5 is outside"],
        ),
    ];
    let mut failures = vec![];
    for (name, edit, says) in cases {
        edited_checkpoint(&ckpt, &d.join("runs").join(name), edit);
        for command in ["train", "check"] {
            let out = match command {
                "train" => fp16_train(d, name, &["--resume", "auto"]),
                _ => {
                    let name = format!("run.name={name:?}");
                    let mut args = vec!["config", "check", "tiny.toml", "--set", &name];
                    args.extend(FP16);
                    args.extend(["--resume", "auto"]);
                    cliptrain(&args, d)
                }
            };
            let err = String::from_utf8_lossy(&out.stderr);
            let state = format!("runs/{name}/step-0000001/state.json holds");
            let named = says.iter().all(|s| err.contains(s)) && err.contains(&state);
            if out.status.code() != Some(1)
                || !named
                || err.contains("panicked")
                || !err.contains("Resume from another checkpoint")
            {
                failures.push(format!(
                    "{name} ({command}): exit {:?}, wanted 1 naming {state:?} and {says:?}:\n{err}",
                    out.status.code()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The checkpoint as the run saved it passes the same checks and continues.
    ok(fp16_train(
        d,
        "base",
        &["--resume", "auto", "--stop-at-step", "2"],
    ));
}

/// A mixture of the good synthetic shards and `bad`, weights `w` each, as `tiny.toml` sets it.
fn mixture(bad: &str, w: &str) -> crate::common::tiny::Tiny {
    crate::common::tiny::tiny()
        .set(r#"data.train="""#)
        .set(r#"data.mode="resampled""#)
        .merge(&format!(
            "[[data.sources]]\nname = \"good\"\ntrain = \"syn/train-{{000000..000002}}.tar\"\n\
             weight = {w}\n[[data.sources]]\nname = \"bad\"\ntrain = \"{bad}\"\nweight = {w}\n"
        ))
}

#[test]
fn mixture_weights_near_the_largest_float_and_a_source_without_usable_samples() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // Weights whose sum overflows: still half and half.
    mixture("syn/train-000000.tar", "1e308").write(d.join("huge.toml"));
    let out = ok(cliptrain(&["data", "inspect", "--config", "huge.toml"], d));
    assert_eq!(out.matches("= 50.0% of the samples").count(), 2, "{out}");
    assert!(!out.contains("NaN"), "{out}");
    // A source whose every sample is unusable (valid tars, images that do not decode).
    let mut b = tar::Builder::new(std::fs::File::create(d.join("bad.tar")).unwrap());
    for i in 0..32 {
        for (ext, data) in [("jpg", &b"not a jpeg"[..]), ("txt", &b"a caption"[..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("bad{i:03}.{ext}"), data)
                .unwrap();
        }
    }
    b.finish().unwrap();
    mixture("bad.tar", "1").write(d.join("starved.toml"));
    let out = cliptrain(&["train", "--config", "starved.toml"], d);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let warning = "data.sources[1] (bad): no usable sample in its last 16 draws";
    assert_eq!(
        err.matches(warning).count(),
        1,
        "warned once per dry spell:\n{err}"
    );
    let strict = [
        "train",
        "--config",
        "starved.toml",
        "--set",
        "data.strict=true",
        "--set",
        "run.name=\"strict\"",
    ];
    let err = refused(cliptrain(&strict, d), 1);
    assert!(
        err.contains(
            "data.sources[1] (bad) produced no usable sample in 16 draws in a row (data.strict = true)"
        ),
        "{err}"
    );
}

#[test]
fn an_eval_suite_with_failed_cells_exits_1_saying_how_many_even_of_ten_thousand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    ok(cliptrain(
        &["train", "--config", "tiny.toml", "--stop-at-step", "0"],
        d,
    ));
    let tasks: String = (0..10_000)
        .map(|i| format!("[[task]]\nname = \"t{i}\"\nkind = \"zeroshot\"\ndata = \"none{i}\"\n"))
        .collect();
    std::fs::write(d.join("big.toml"), tasks).unwrap();
    let start = std::time::Instant::now();
    let out = cliptrain(
        &[
            "-q",
            "eval",
            "suite",
            "--suite",
            "big.toml",
            "--checkpoint",
            "runs/t",
        ],
        d,
    );
    let took = start.elapsed();
    let err = refused(out, 1);
    for said in [
        "10000 of 10000 suite cells (tasks × checkpoints) failed",
        "t0 on runs/t: ",
        "t4 on runs/t: ",
        "... and 9995 more",
    ] {
        assert!(
            err.contains(said),
            "{said:?} missing from:\n{}",
            &err[..err.len().min(3000)]
        );
    }
    assert!(
        !err.contains("t5 on runs/t"),
        "only the first five are listed"
    );
    // Measured: ~1 s; the bound only catches work that grows faster than the tasks.
    assert!(took.as_secs() < 60, "10^4 failing tasks took {took:?}");
}

#[test]
fn images_are_embedded_and_probed_by_a_model_folder_without_a_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    ok(cliptrain(
        &["train", "--config", "tiny.toml", "--stop-at-step", "0"],
        d,
    ));
    // The checkpoint without its tokenizer.json, and its config's data.tokenizer gone too.
    let from = d.join("runs/t/latest").canonicalize().unwrap();
    std::fs::create_dir_all(d.join("notok")).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap();
        if name != "tokenizer.json" && name != "manifest.json" {
            std::fs::copy(&p, d.join("notok").join(name)).unwrap();
        }
    }
    std::fs::rename(d.join("syn/tok.json"), d.join("syn/tok.moved")).unwrap();
    let run = |args: &[&str]| cliptrain(args, d);
    let embed = ["embed", "--checkpoint", "notok", "--out", "i.safetensors"];
    let out = ok(run(
        &[&embed[..], &["--images", "syn/eval-000000.tar"]].concat()
    ));
    assert!(out.contains("8 images embedded"), "{out}");
    let probe = [
        "eval",
        "knn",
        "--checkpoint",
        "notok",
        "--train",
        "syn/eval-000000.tar",
        "--test",
        "syn/eval-000000.tar",
        "--classnames",
        "syn/classnames.txt",
        "--k",
        "1",
        "--no-cache",
    ];
    let out = run(&probe);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Texts still need the tokenizer, and say so.
    std::fs::write(d.join("t.txt"), "a red square\n").unwrap();
    let err = refused(run(&[&embed[..], &["--texts", "t.txt"]].concat()), 1);
    assert!(err.contains("notok has no tokenizer"), "{err}");
    let zeroshot = [
        "eval",
        "zeroshot",
        "--checkpoint",
        "notok",
        "--data",
        "syn/eval-000000.tar",
        "--classnames",
        "syn/classnames.txt",
    ];
    let err = refused(run(&zeroshot), 1);
    assert!(err.contains("notok has no tokenizer"), "{err}");
}
