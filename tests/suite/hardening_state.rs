//! Hostile input of issue 27 (items 12 and 18-21): a checkpoint's `state.json` edited to numbers
//! no run could save, mixtures that overflow or starve, an evaluation suite whose tasks fail, a
//! model folder without a tokenizer. Each must end in a clear error (or a warning) naming the
//! file, field or source — never a panic, a hang, a silent exit 0 or a wrong figure.
use crate::common::tiny::setup;
use crate::common::{cliptrain, ok};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;

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
                v["bad_steps_total"] = json!(7);
                v["seed"] = json!(4);
            },
            &[
                "step = 18446744073709551615: more than any run reaches",
                "samples_seen = ",
                "bad_steps_total = 7: more skipped steps than the 1 step(s) run",
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
