//! Hostile input made by each test: model folders with impossible sizes, devices and sizes the
//! host does not have, broken and missing shards. Every one must end in a one-line error (or a
//! warning) naming the file or key — never a panic, an abort or unbounded growth.
use crate::common::tiny::two_step;
use crate::common::{cliptrain, ok, small_synth};
use cliptrain::data::spec::Shard;
use cliptrain::data::stream::{Order, ShardStream, StreamOptions};
use cliptrain::interop::ModelSource;
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

/// In `d`: synthetic data, `tiny.toml`, and its run stopped at step 0 (`--stop-at-step 0` with
/// far too many threads asked for). Returns that run's stderr.
fn step_zero_run(d: &Path) -> String {
    small_synth(d, 64, 8, 32);
    two_step("quick_gelu").write(d.join("tiny.toml"));
    let out = cliptrain(
        &["train", "--config", "tiny.toml", "--stop-at-step", "0"]
            .into_iter()
            .chain([
                "--set",
                "run.threads=100000",
                "--set",
                "data.workers=100000",
            ])
            .collect::<Vec<_>>(),
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    err
}

/// A copy of the model folder `from` at `to` with its JSON config `file` edited by `edit`.
fn edited(from: &Path, to: &Path, file: &str, edit: impl FnOnce(&mut Value)) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    let mut v: Value = serde_json::from_slice(&std::fs::read(to.join(file)).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(to.join(file), v.to_string()).unwrap();
}

fn open_err(dir: &Path) -> String {
    ModelSource::open(dir).unwrap_err().to_string()
}

#[test]
fn stop_at_step_zero_checkpoints_and_thread_counts_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let err = step_zero_run(dir.path());
    let ckpt = dir.path().join("runs/t/step-0000000");
    assert!(ckpt.join("model.safetensors").is_file(), "{err}");
    for key in ["run.threads = 100000", "data.workers = 100000"] {
        assert!(err.contains(&format!("{key} is more than")), "{err}");
    }
}

#[test]
fn model_folders_with_impossible_sizes_are_refused_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    step_zero_run(d);
    let ckpt = "runs/t/step-0000000";
    ok(cliptrain(
        &["export", "hf", "--checkpoint", ckpt, "--out", "hf"],
        d,
    ));
    ok(cliptrain(
        &["export", "openclip", "--checkpoint", ckpt, "--out", "oc"],
        d,
    ));
    let big = json!(1_000_000_000u64);
    let cases: [(&str, &str, &str, Value); 4] = [
        ("hf", "vision_config", "hidden_size", big.clone()),
        ("hf", "text_config", "num_hidden_layers", big.clone()),
        (
            "hf",
            "text_config",
            "vocab_size",
            json!(1_000_000_000_000u64),
        ),
        ("oc", "vision_cfg", "width", big),
    ];
    for (i, (kind, section, key, value)) in cases.into_iter().enumerate() {
        let (to, file) = (
            d.join(format!("bad{i}")),
            if kind == "hf" {
                "config.json"
            } else {
                "open_clip_config.json"
            },
        );
        edited(&d.join(kind), &to, file, |v| match v.get_mut("model_cfg") {
            Some(m) => m[section][key] = value,
            None => v[section][key] = value,
        });
        let msg = open_err(&to);
        assert!(msg.contains(&to.join(file).display().to_string()), "{msg}");
        assert!(msg.contains(&format!("{section}.{key} = ")), "{msg}");
    }
    // A JSON array is not a config with every key at its default.
    edited(&d.join("hf"), &d.join("array"), "config.json", |v| {
        *v = json!([1, 2])
    });
    let msg = open_err(&d.join("array"));
    assert!(
        msg.contains("must be a JSON object of settings, found an array"),
        "{msg}"
    );
    // A checkpoint's config.toml is held to the same rules and shapes.
    let toml_path = d.join(ckpt).join("config.toml");
    let text = std::fs::read_to_string(&toml_path).unwrap();
    let layers = text.replacen("layers = 2", "layers = 1000000000", 2);
    std::fs::write(&toml_path, layers).unwrap();
    let out = cliptrain(&["export", "hf", "--checkpoint", ckpt, "--out", "x"], d);
    let err = refused(out, 1);
    assert!(
        err.contains("config.toml") && err.contains("model.vision.layers = 1000000000"),
        "{err}"
    );
}

#[test]
fn devices_the_host_does_not_have_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("gpu.toml"),
        "[run]\ndevice = \"cuda:7\"\noutput_dir = \"runs\"\n",
    )
    .unwrap();
    let err = refused(cliptrain(&["train", "--config", "gpu.toml"], d), 1);
    assert!(
        err.contains("run.device = cuda:7 is not on this host: it has"),
        "{err}"
    );
    let eval = [
        "eval",
        "zeroshot",
        "--checkpoint",
        "m",
        "--data",
        "x.tar",
        "--classnames",
        "c",
    ];
    let err = refused(
        cliptrain(&[&eval[..], &["--device", "cuda:7"]].concat(), d),
        1,
    );
    assert!(err.contains("--device cuda:7 is not on this host"), "{err}");
    let embed = [
        "embed",
        "--checkpoint",
        "m",
        "--texts",
        "t",
        "--out",
        "o",
        "--device",
        "cuda:7",
    ];
    assert!(refused(cliptrain(&embed, d), 1).contains("--device cuda:7 is not on this host"));
    let err = refused(
        cliptrain(&[&eval[..], &["--batch-size", "0"]].concat(), d),
        2,
    );
    assert!(err.contains("the batch size is 0"), "{err}");
}

#[test]
fn sizes_that_cannot_fit_are_refused_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_step("gelu").write(d.join("tiny.toml"));
    for key in ["optim.batch_size", "data.prefetch", "data.shuffle_buffer"] {
        let set = format!("{key}=1000000000000");
        let out = cliptrain(&["train", "--config", "tiny.toml", "--set", &set], d);
        let err = refused(out, 1);
        assert!(err.contains("in memory") && err.contains(key), "{err}");
    }
    // run.output_dir that is a file: the error names it.
    std::fs::write(d.join("afile"), "").unwrap();
    let out = cliptrain(
        &[
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "run.output_dir=afile",
        ],
        d,
    );
    assert!(refused(out, 1).contains("run.output_dir = afile: cannot write in afile/t"));
    // config check: a tokenizer that is not there.
    let err = refused(cliptrain(&["config", "check", "tiny.toml"], d), 1);
    assert!(
        err.contains("data.tokenizer = \"syn/tok.json\": no such file"),
        "{err}"
    );
}

#[test]
fn the_shuffle_buffer_stops_at_its_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    small_synth(dir.path(), 32, 8, 32);
    let shard = dir
        .path()
        .join("syn/train-000000.tar")
        .display()
        .to_string();
    let opts = StreamOptions {
        order: Order::Epoch,
        shuffle_buffer: 1_000_000_000,
        seed: 0,
        rank: 0,
        world_size: 1,
    };
    let mut s = ShardStream::new(vec![Shard::File(shard)], opts)
        .unwrap()
        .limit_buffer_bytes(20_000);
    let e = s.next_sample().unwrap_err().to_string();
    assert!(
        e.starts_with("data.shuffle_buffer = 1000000000: its first"),
        "{e}"
    );
}

#[test]
fn bad_shards_warn_once_and_strict_makes_a_missing_one_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_synth(d, 64, 8, 32);
    two_step("gelu").write(d.join("tiny.toml"));
    // The second member's header checksum broken: the rest of that shard is lost, every pass.
    let mut tar = std::fs::read(d.join("syn/train-000001.tar")).unwrap();
    let size = u64::from_str_radix(std::str::from_utf8(&tar[124..135]).unwrap(), 8).unwrap();
    tar[512 + (size as usize).div_ceil(512) * 512 + 1] ^= 0x41;
    std::fs::write(d.join("syn/broken.tar"), tar).unwrap();
    let train = "data.train=syn/train-000000.tar::syn/broken.tar::syn/missing.tar";
    let args = [
        "train",
        "--config",
        "tiny.toml",
        "--set",
        train,
        "--set",
        "optim.steps=12",
    ];
    let out = cliptrain(&args, d);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert_eq!(err.matches("missing.tar").count(), 1, "{err}");
    assert_eq!(
        err.matches("syn/broken.tar: tar header").count(),
        1,
        "{err}"
    );
    let strict = [
        &args[..],
        &["--set", "data.strict=true", "--set", "run.name=s"],
    ]
    .concat();
    let err = refused(cliptrain(&strict, d), 1);
    assert!(
        err.contains("data.strict = true and 1 shard file(s)") && err.contains("missing.tar"),
        "{err}"
    );
    // inspect: a spec with no usable sample exits non-zero, as train does.
    std::fs::write(d.join("junk.tar"), "not a tar").unwrap();
    refused(cliptrain(&["data", "inspect", "junk.tar"], d), 1);
}
