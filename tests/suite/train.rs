//! Training end to end on a tiny model and the synthetic data: exact resume, feature-caching
//! gradients, interruption, checkpoint contents.
use crate::common;
use crate::common::tiny::{losses, setup, setup_with, tiny, tiny_config, weights};
use crate::common::{cliptrain, ok};
use cliptrain::config::{self, DeviceSpec, LossKind};
use cliptrain::data::pixels::PixelNorm;
use cliptrain::dist::Dist;
use cliptrain::loss::ClipLoss;
use cliptrain::model::{ClipModel, LoraConfig, LoraTarget, LoraTower, is_adapter};
use cliptrain::train::{self, ForwardBackward, Resume, StopToken, TrainOptions};
use std::process::Command;
use tch::{Device, Kind, Tensor, nn};

#[test]
fn resume_after_a_stop_reproduces_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // With patch dropout on, so that its draw is shown to resume exactly too.
    setup_with(d, &tiny().set("model.vision.patch_dropout=0.5"));
    let written = std::fs::read_to_string(d.join("tiny.toml")).unwrap();
    assert!(written.contains("patch_dropout = 0.5"), "{written}");
    ok(cliptrain(
        &["train", "--config", "tiny.toml", "--set", "run.name=full"],
        d,
    ));
    let out = ok(cliptrain(
        &[
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "run.name=split",
            "--stop-at-step",
            "3",
        ],
        d,
    ));
    assert!(
        out.contains(
            "continue with: cliptrain train --config tiny.toml --set run.name=split --resume auto"
        ),
        "{out}"
    );
    assert!(
        d.join("runs/split/step-0000003/optimizer.safetensors")
            .is_file()
    );
    ok(cliptrain(
        &[
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "run.name=split",
            "--resume",
            "auto",
        ],
        d,
    ));

    let saved = std::fs::read_to_string(d.join("runs/full/latest/config.toml")).unwrap();
    assert!(saved.contains("patch_dropout = 0.5"), "{saved}");
    let (full, split) = (losses(&d.join("runs/full")), losses(&d.join("runs/split")));
    assert_eq!(full.len(), 6);
    assert_eq!(full, split, "the loss sequence continues exactly");
    let (a, b) = (
        weights(&d.join("runs/full/latest")),
        weights(&d.join("runs/split/latest")),
    );
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{na} differs by {diff}");
    }
    // A fresh start on a run that has checkpoints is refused rather than overwriting them.
    let again = cliptrain(
        &["train", "--config", "tiny.toml", "--set", "run.name=full"],
        d,
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume auto"));
}

#[test]
fn checkpoint_holds_hf_named_weights_state_config_and_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let out = ok(cliptrain(
        &[
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "optim.steps=2",
            "--set",
            "optim.warmup_steps=1",
        ],
        d,
    ));
    assert!(out.contains("loss: first"), "{out}");
    let ckpt = d.join("runs/t/latest");
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "config.toml",
        "tokenizer.json",
    ] {
        assert!(ckpt.join(f).is_file(), "{f} missing");
    }
    let names: Vec<String> = weights(&ckpt).into_iter().map(|(n, _)| n).collect();
    for want in [
        "logit_scale",
        "visual_projection.weight",
        "vision_model.pre_layrnorm.weight",
        "text_model.final_layer_norm.bias",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 2);
    assert_eq!(state["samples_seen"], 16);
    let saved = config::load(&ckpt.join("config.toml"), &[]).unwrap();
    assert_eq!(
        saved.optim.steps, 2,
        "the effective config, overrides applied"
    );
}

/// A CPU config of a 16 px, 2-layer model with a vocabulary of 50 (EOT 49), context 8.
fn small_step_config() -> config::Config {
    let mut cfg = config::Config::default();
    cfg.run.device = DeviceSpec::Cpu;
    let m = &mut cfg.model;
    (
        m.embed_dim,
        m.vision.image_size,
        m.vision.patch_size,
        m.vision.width,
        m.vision.layers,
        m.vision.heads,
    ) = (16, 16, 8, 32, 2, 2);
    (
        m.text.vocab_size,
        m.text.context_length,
        m.text.width,
        m.text.layers,
        m.text.heads,
    ) = (50, 8, 32, 2, 2);
    cfg
}

/// Twelve random u8 images and caption token rows for [`small_step_config`].
fn small_batch() -> (Tensor, Tensor) {
    let images = Tensor::randint(256, [12, 3, 16, 16], (Kind::Uint8, Device::Cpu));
    let tokens = Tensor::randint(48, [12, 8], (Kind::Int64, Device::Cpu));
    let _ = tokens.narrow(1, 5, 1).fill_(49); // EOT
    (images, tokens)
}

#[test]
fn feature_caching_gives_the_full_batch_gradient() {
    let _rng = common::rng_lock();
    tch::manual_seed(0);
    let mut cfg = small_step_config();
    // With patch dropout, a micro-batch must keep the patches its images keep in the whole
    // batch, in both of its passes.
    // And with LoRA on a frozen image tower: only its adapters (and the text tower) have
    // gradients, and those must not depend on the micro-batching either.
    for (kind, dropout, lora) in [
        (LossKind::InfoNce, 0.0, false),
        (LossKind::Siglip, 0.0, false),
        (LossKind::InfoNce, 0.5, false),
        (LossKind::InfoNce, 0.0, true),
    ] {
        cfg.loss.kind = kind;
        cfg.model.vision.patch_dropout = dropout;
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = ClipModel::new(&vs.root(), &cfg.model.spec(49, kind)).unwrap();
        if lora {
            let adapters = LoraConfig {
                rank: 4,
                targets: vec![LoraTarget::QProj, LoraTarget::VProj, LoraTarget::Fc2],
                towers: vec![LoraTower::Image],
                ..LoraConfig::default()
            };
            model.attach_adapters(&vs.root(), &adapters);
            for (name, v) in vs.variables() {
                if is_adapter(&name) {
                    // lora_B starts at zero, which would leave lora_A without a gradient.
                    let _ = tch::no_grad(|| v.shallow_clone().normal_(0.0, 0.1));
                } else if name.starts_with("vision_model.") {
                    let _ = v.set_requires_grad(false);
                }
            }
        }
        let (images, tokens) = small_batch();
        let grads = |micro: usize| {
            for (_, v) in vs.variables() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            let mut cfg = cfg.clone();
            cfg.optim.micro_batch_size = micro;
            let step = ForwardBackward::new(&cfg, Device::Cpu, vec![]);
            let clip_loss = ClipLoss::new(&cfg.loss);
            // A job of one process: the same step as every rank of a larger one.
            let loss = step
                .run(
                    &model,
                    &clip_loss,
                    (&images, &tokens, None),
                    &Dist::single(),
                    None,
                    1,
                )
                .unwrap()
                .double_value(&[]);
            let mut named: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .filter(|(_, v)| v.requires_grad())
                .map(|(n, v)| (n, v.grad().copy()))
                .collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            (loss, named)
        };
        let (full_loss, full) = grads(0);
        if lora {
            let adapters = full.iter().filter(|(n, _)| is_adapter(n)).count();
            assert_eq!(adapters, 2 * 2 * 3, "2 blocks x 3 targets x (A, B)");
            assert!(
                full.iter()
                    .all(|(n, _)| is_adapter(n) || !n.starts_with("vision_model."))
            );
        }
        let global = full
            .iter()
            .map(|(_, g)| g.abs().max().double_value(&[]))
            .fold(0.0, f64::max);
        for micro in [4, 3] {
            let (loss, cached) = grads(micro);
            assert!(
                (loss - full_loss).abs() < 1e-6,
                "{kind:?} {dropout} lora {lora} micro {micro}: loss {loss} vs {full_loss}"
            );
            for ((n, a), (_, b)) in full.iter().zip(&cached) {
                let scale = a.abs().max().double_value(&[]).max(1e-8);
                let diff = (a - b).abs().max().double_value(&[]);
                // Relative, with a floor of 1e-6 of the largest gradient for gradients that are
                // zero in exact arithmetic (attention key biases, which softmax ignores).
                assert!(
                    diff <= 1e-5 * scale + 1e-6 * global,
                    "{kind:?} {dropout} lora {lora} micro {micro}: {n} gradient differs by {diff} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn tensorboard_reads_the_training_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    ok(cliptrain(
        &[
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "log.tensorboard=true",
            "--set",
            "optim.steps=3",
            "--set",
            "optim.warmup_steps=1",
        ],
        d,
    ));
    let script = r#"
import sys, json
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1]); acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;
    let out = Command::new(common::venv_python())
        .args(["-c", script, d.join("runs/t/tb").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tensorboard could not read the events (scripts/bootstrap.sh --ref installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scalars: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loss = scalars["train/loss"]
        .as_array()
        .expect("train/loss is logged");
    assert_eq!(
        loss.iter()
            .map(|e| e[0].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let jsonl = losses(&d.join("runs/t"));
    for (e, (step, l)) in loss.iter().zip(&jsonl) {
        assert_eq!(e[0].as_u64().unwrap(), *step);
        assert!(
            (e[1].as_f64().unwrap() - l).abs() < 1e-5,
            "TensorBoard and metrics.jsonl agree"
        );
    }
    for tag in [
        "train/lr",
        "train/temperature",
        "train/grad_norm",
        "train/samples_per_s",
        "train/data_wait_fraction",
    ] {
        assert!(scalars.get(tag).is_some(), "{tag} missing: {scalars}");
    }
}

/// Ctrl-C finishes the step, checkpoints and prints the command that continues this very run,
/// every `--set` included; while the run lives, a second `train` on its folder is refused.
#[test]
fn sigint_checkpoints_and_prints_the_resume_command_and_a_second_run_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let mut args = vec!["train", "--config", "tiny.toml"];
    for set in [
        "run.name=my run",
        "optim.steps=100000",
        "checkpoint.every=0",
    ] {
        args.extend(["--set", set]);
    }
    let child = Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args(&args)
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = d.join("runs/my run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(true, |m| m.lines().count() < 2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "training never logged a step"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = cliptrain(&[&args[..], &["--resume", "auto"]].concat(), d);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    let holder = format!("in use by another cliptrain process (pid {})", child.id());
    assert!(stderr.contains(&holder), "{stderr}");
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hint = stdout
        .lines()
        .find_map(|l| l.split_once("continue with: "))
        .unwrap_or_else(|| panic!("no resume command in:\n{stdout}"))
        .1;
    assert_eq!(
        hint,
        "cliptrain train --config tiny.toml --set 'run.name=my run' --set optim.steps=100000 \
         --set checkpoint.every=0 --resume auto"
    );
    let step_of = |dir: &str| {
        let state = std::fs::read_to_string(run.join(dir).join("state.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&state).unwrap()["step"]
            .as_u64()
            .unwrap()
    };
    let stopped = step_of("latest");
    assert!(stopped >= 2);
    // The printed command, run by a shell, continues this run (here for one more step).
    let bin = env!("CARGO_BIN_EXE_cliptrain");
    let cmd = format!(
        "'{bin}'{} --stop-at-step {}",
        &hint["cliptrain".len()..],
        stopped + 1
    );
    ok(Command::new("sh")
        .args(["-c", &cmd])
        .current_dir(d)
        .output()
        .unwrap());
    assert_eq!(step_of("latest"), stopped + 1);
    let steps: Vec<u64> = losses(&run).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, (1..=stopped + 1).collect::<Vec<_>>());
}

#[test]
fn non_finite_losses_stop_the_run_and_keep_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // An absurd learning rate blows the weights up after the first update.
    let out = cliptrain(
        &[
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "optim.lr=1e30",
            "--set",
            "optim.warmup_steps=0",
            "--set",
            "optim.max_bad_steps=2",
            "--set",
            "checkpoint.every=1",
        ],
        d,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("non-finite losses in a row (optim.max_bad_steps = 2)"),
        "{stderr}"
    );
    let latest = d.join("runs/t/latest");
    assert!(latest.join("model.safetensors").is_file() && latest.join("state.json").is_file());
    assert!(
        !std::fs::read_dir(d.join("runs/t")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp"))
    );
}

#[test]
fn bf16_autocast_trains_on_the_cpu_path_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    ok(cliptrain(
        &[
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "run.precision=bf16",
            "--set",
            "optim.steps=3",
            "--set",
            "optim.warmup_steps=1",
        ],
        d,
    ));
    let l = losses(&d.join("runs/t"));
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|(_, x)| x.is_finite()), "{l:?}");
}

#[test]
fn a_log_file_gets_plain_text_and_counts_as_integers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let log = d.join("log.txt");
    let status = Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args(["train", "--config", "tiny.toml"])
        .args(["--set", "optim.steps=1", "--set", "optim.warmup_steps=0"])
        .current_dir(d)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape bytes in a log file:\n{text}"
    );
    // The step line, e.g. "train step 1: bad_steps 0  data_wait_fraction 0.1234 ...".
    let step = text
        .lines()
        .find(|l| l.contains("train step 1:"))
        .unwrap_or_else(|| panic!("no step line in:\n{text}"));
    assert!(step.contains("bad_steps 0 "), "{step}");
    assert!(step.contains("skipped_samples 0"), "{step}");
    assert!(!step.contains("bad_steps 0.0"), "{step}");
    let row = std::fs::read_to_string(d.join("runs/t/metrics.jsonl")).unwrap();
    assert!(row.contains("\"bad_steps\":0,"), "{row}");
}

/// A stop asked for before the run starts (Ctrl-C during start-up) ends it before its first
/// step; the run then resumes in the same process, its lock released, and runs to the end.
#[test]
fn a_stop_during_start_up_ends_the_run_before_its_first_step_and_a_resume_continues() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let _rng = common::rng_lock();
    let stop = StopToken::new();
    stop.stop();
    let opts = TrainOptions {
        stop: stop.clone(),
        ..TrainOptions::default()
    };
    let cfg = tiny_config(d, &["optim.steps=2", "optim.warmup_steps=1"]);
    let s = train::train(&cfg, &opts).unwrap();
    assert!(s.interrupted);
    assert_eq!((s.first_step, s.last_step, s.checkpoint), (0, 0, None));
    assert!(cliptrain::checkpoint::list(&d.join("runs/t")).is_empty());
    let opts = TrainOptions {
        resume: Resume::Auto,
        ..TrainOptions::default()
    };
    let s = train::train(&cfg, &opts).unwrap();
    assert!(!s.interrupted);
    assert_eq!((s.first_step, s.last_step, s.losses.len()), (0, 2, 2));
    assert_eq!(s.checkpoint, Some(d.join("runs/t/step-0000002")));
}

#[test]
fn a_moved_and_renamed_run_resumes_and_a_changed_model_is_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let _rng = common::rng_lock();
    let short = ["optim.steps=2", "optim.warmup_steps=1"];
    train::train(&tiny_config(d, &short), &TrainOptions::default()).unwrap();
    // The run folder moves to another output_dir under another name.
    std::fs::create_dir_all(d.join("archive")).unwrap();
    std::fs::rename(d.join("runs/t"), d.join("archive/renamed")).unwrap();
    let resume = |more: &[&str]| {
        let mut overrides = vec!["run.output_dir=archive", "run.name=renamed"];
        overrides.extend_from_slice(more);
        let opts = TrainOptions {
            resume: Resume::Auto,
            ..TrainOptions::default()
        };
        train::train(&tiny_config(d, &overrides), &opts)
    };
    // ...and continues, extended by a step and logged differently.
    let s = resume(&["optim.steps=3", "optim.warmup_steps=1", "log.every=2"]).unwrap();
    assert_eq!((s.first_step, s.last_step), (2, 3));
    assert_eq!(s.checkpoint, Some(d.join("archive/renamed/step-0000003")));
    // A different embedding size is another model: refused, naming the key and both values.
    let err = resume(&[
        "optim.steps=3",
        "optim.warmup_steps=1",
        "model.embed_dim=32",
    ])
    .expect_err("a changed model.embed_dim is refused")
    .to_string();
    assert!(
        err.contains("model.embed_dim: 16 in the checkpoint, 32 now"),
        "{err}"
    );
    assert!(!err.contains("optim.steps:"), "{err}");
    assert!(err.contains("may change on resume: run.name"), "{err}");
}

/// Per logged step of a run: (loss, grad_norm or None when skipped, loss_scale, bad_steps).
fn fp16_rows(run: &std::path::Path) -> Vec<(f64, Option<f64>, f64, u64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| {
            (
                v["loss"].as_f64().unwrap(),
                v["grad_norm"].as_f64(),
                v["loss_scale"].as_f64().unwrap(),
                v["bad_steps"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn fp16_overflow_skips_the_step_backs_off_the_scale_and_resumes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // GradScaler's initial scale is too large for this model's fp16 gradients: the first steps
    // overflow (measured: two) until the scale has backed off enough.
    let fp16 = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "run.precision=fp16",
            "--set",
            "run.loss_scale=65536",
            "--set",
        ];
        let name = format!("run.name={name}");
        args.push(&name);
        args.extend(extra);
        ok(cliptrain(&args, d));
    };
    fp16("full", &[]);
    let full = fp16_rows(&d.join("runs/full"));
    assert_eq!(full.len(), 6);
    let first_taken = full
        .iter()
        .position(|r| r.1.is_some())
        .expect("a step is taken");
    assert!(first_taken >= 1, "step 1 must overflow: {full:?}");
    for (i, (loss, norm, scale, bad)) in full.iter().enumerate() {
        assert!(loss.is_finite(), "{full:?}");
        // An overflow is the scaler's calibration, not a bad step.
        assert_eq!(*bad, 0);
        if i < first_taken {
            assert!(norm.is_none());
            assert_eq!(
                *scale,
                65536.0 * 0.5f64.powi(i as i32 + 1),
                "backs off: {full:?}"
            );
        } else {
            assert!(norm.is_some_and(f64::is_finite), "{full:?}");
            assert_eq!(
                *scale,
                full[first_taken - 1].2,
                "no overflow, no change: {full:?}"
            );
        }
    }
    // Stopped inside the overflowing stretch and resumed: the same scales and losses.
    fp16("split", &["--stop-at-step", "1"]);
    // The skipped step left the weights as they were initialised.
    fp16("init", &["--stop-at-step", "0"]);
    let (init, after) = (
        weights(&d.join("runs/init/latest")),
        weights(&d.join("runs/split/step-0000001")),
    );
    assert_eq!(init.len(), after.len());
    for ((n, a), (_, b)) in init.iter().zip(&after) {
        assert!(a.equal(b), "{n} changed on a skipped step");
    }
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("runs/split/step-0000001/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["loss_scale"]["scale"].as_f64(),
        Some(32768.0),
        "{state}"
    );
    fp16("split", &["--resume", "auto"]);
    assert_eq!(fp16_rows(&d.join("runs/split")), full);
}

#[test]
fn every_minutes_checkpoints_by_the_clock_between_step_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let _rng = common::rng_lock();
    // 0.06 ms: every step takes longer, so each asks for one; `every = 0` alone writes only
    // the last step's.
    let cfg = tiny_config(
        d,
        &[
            "optim.steps=3",
            "checkpoint.every=0",
            "checkpoint.every_minutes=0.000001",
        ],
    );
    train::train(&cfg, &TrainOptions::default()).unwrap();
    for step in 1..=3 {
        let ckpt = d.join(format!("runs/t/step-000000{step}"));
        assert!(
            ckpt.join("model.safetensors").is_file(),
            "{}",
            ckpt.display()
        );
    }
}

#[test]
fn a_checkpoint_written_before_the_gpu_grade_step_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let fixture = common::repo().join("tests/fixtures/checkpoint-per-tensor-adamw/step-0000003");
    let old = d.join("runs/t/step-0000003");
    std::fs::create_dir_all(&old).unwrap();
    for f in std::fs::read_dir(&fixture).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), old.join(f.file_name())).unwrap();
    }
    ok(cliptrain(
        &[
            "train",
            "--config",
            "tiny.toml",
            "--resume",
            "runs/t/step-0000003",
        ],
        d,
    ));
    ok(cliptrain(
        &["train", "--config", "tiny.toml", "--set", "run.name=full"],
        d,
    ));
    let (resumed, full) = (losses(&d.join("runs/t")), losses(&d.join("runs/full")));
    assert_eq!(resumed.iter().map(|l| l.0).collect::<Vec<_>>(), [4, 5, 6]);
    // Not bit-exact: the old run normalised on the host and used the per-tensor optimizer.
    for ((step, a), (_, b)) in resumed.iter().zip(&full[3..]) {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "step {step}: {a} vs {b}");
    }
}

/// Batches are u8 and normalised in the step. The model must see what it saw when the decode
/// workers wrote float batches through a per-channel table of `(v / 255 − mean) / std` (in f64,
/// rounded to f32): the same features and the same loss, within 1e-5.
#[test]
fn u8_batches_normalised_in_the_step_match_float_batches() {
    let _rng = common::rng_lock();
    tch::manual_seed(1);
    let cfg = small_step_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = ClipModel::new(&vs.root(), &cfg.model.spec(49, cfg.loss.kind)).unwrap();
    let (images, tokens) = small_batch();
    let channel = |v: [f64; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]);
    let (mean, std) = (channel(cfg.data.image_mean), channel(cfg.data.image_std));
    let table = ((images.to_kind(Kind::Double) / 255.0 - mean) / std).to_kind(Kind::Float);

    let step = ForwardBackward::new(&cfg, Device::Cpu, vec![]);
    let clip_loss = ClipLoss::new(&cfg.loss);
    let loss = step
        .run(
            &model,
            &clip_loss,
            (&images, &tokens, None),
            &Dist::single(),
            None,
            1,
        )
        .unwrap()
        .double_value(&[]);
    let (features, reference) = tch::no_grad(|| {
        let pixels = PixelNorm::new(cfg.data.image_mean, cfg.data.image_std, Device::Cpu);
        let ours = model.encode_image(&pixels.apply(&images));
        let text = model.encode_text(&tokens);
        let theirs = model.encode_image(&table);
        let loss = clip_loss.forward_local(
            &theirs,
            &text,
            0,
            12,
            model.logit_scale(),
            model.logit_bias(),
        );
        (ours, (theirs, loss.double_value(&[])))
    });
    let diff = (&features - &reference.0).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "image features differ by {diff}");
    assert!(
        (loss - reference.1).abs() < 1e-5,
        "loss {loss} vs {} with float batches",
        reference.1
    );
}
