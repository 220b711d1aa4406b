//! What a run does when things go wrong around it: damaged checkpoints, a checkpoint write that
//! fails, temporaries a killed process left, and `kill -9` at random moments.
use crate::common::tiny::{losses, setup, weights};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `cliptrain train --config tiny.toml` with `--set` for each of `sets`, then `more`.
fn train(d: &Path, sets: &[&str], more: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cliptrain"));
    cmd.args(["train", "--config", "tiny.toml"]).current_dir(d);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.args(more);
    cmd
}

fn succeeded(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stderr: {stderr}");
    stderr
}

/// The names in a run folder that only an unfinished checkpoint write leaves.
fn temporaries(run: &Path) -> Vec<String> {
    std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp") || n.starts_with(".latest-"))
        .collect()
}

fn steps_logged(run: &Path) -> Vec<u64> {
    losses(run).into_iter().map(|(s, _)| s).collect()
}

fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs");
    }
}

#[test]
fn resume_auto_passes_over_damaged_checkpoints_and_a_named_damaged_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    succeeded(train(d, &[], &[]).output().unwrap()); // checkpoints at steps 2, 4 and 6
    let run = d.join("runs/t");
    let uninterrupted = d.join("uninterrupted");
    std::fs::create_dir_all(&uninterrupted).unwrap();
    for e in std::fs::read_dir(run.join("step-0000006")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), uninterrupted.join(e.file_name())).unwrap();
    }
    // Step 6's optimizer state cut short, as by a full disk or an interrupted copy.
    let opt = run.join("step-0000006/optimizer.safetensors");
    let len = std::fs::metadata(&opt).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&opt)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Step 4 as a checkpoint from before manifests, with a NaN in its weights.
    std::fs::remove_file(run.join("step-0000004/manifest.json")).unwrap();
    let model = run.join("step-0000004/model.safetensors");
    let mut w = weights(&run.join("step-0000004"));
    w[0].1 = &w[0].1 * f64::NAN;
    tch::Tensor::write_safetensors(&w, &model).unwrap();

    let named = train(d, &[], &["--resume", "runs/t/step-0000006"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&named.stderr);
    assert_eq!(named.status.code(), Some(1), "{stderr}");
    let cut = format!(
        "checkpoint runs/t/step-0000006 is damaged: optimizer.safetensors is {} bytes, the \
         manifest says {len}",
        len / 2
    );
    assert!(stderr.contains(&cut), "{stderr}");

    let stderr = succeeded(train(d, &[], &["--resume", "auto"]).output().unwrap());
    assert!(stderr.contains(&cut), "{stderr}");
    let nan = format!(
        "checkpoint runs/t/step-0000004 is damaged: model.safetensors: `{}` holds non-finite",
        w[0].0
    );
    assert!(stderr.contains(&nan), "{stderr}");
    assert!(
        stderr.contains("resumed from runs/t/step-0000002 at step 2"),
        "{stderr}"
    );
    assert_same_weights(&run.join("latest"), &uninterrupted);
    assert_eq!(steps_logged(&run), [1, 2, 3, 4, 5, 6]);
}

/// A checkpoint write that fails (here: files may not outgrow the model, so the optimizer
/// state cannot be written) removes its temporary folder and ends the run with the previous
/// checkpoint intact; temporaries a killed process left are removed at start. Retrying adds
/// nothing.
#[test]
fn a_failed_checkpoint_write_leaves_nothing_behind_and_start_up_removes_what_a_kill_left() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    succeeded(train(d, &["optim.steps=2"], &[]).output().unwrap());
    let run = d.join("runs/t");
    std::fs::create_dir_all(run.join(".tmp-step-0000003-4242")).unwrap();
    std::fs::write(
        run.join(".tmp-step-0000003-4242/model.safetensors"),
        b"half",
    )
    .unwrap();
    std::os::unix::fs::symlink("step-0000003", run.join(".latest-4242")).unwrap();
    let limit = std::fs::metadata(run.join("step-0000002/model.safetensors"))
        .unwrap()
        .len()
        + 4096;
    for _ in 0..2 {
        let mut cmd = train(d, &["optim.steps=4"], &["--resume", "auto"]);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("optimizer.safetensors"), "{stderr}");
        assert_eq!(stderr.matches("File too large").count(), 1, "{stderr}");
        assert_eq!(temporaries(&run), Vec::<String>::new());
    }
    let kept: Vec<u64> = cliptrain::checkpoint::list(&run)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(kept, [2]);
    let latest = run.join("latest").canonicalize().unwrap();
    assert!(latest.ends_with("step-0000002"));
    cliptrain::checkpoint::verify(&latest).expect("the last good checkpoint is intact");
}

/// A small deterministic generator for the kill delays (xorshift64*).
struct Delays(u64);

impl Delays {
    /// A fraction in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `kill -9` at seeded random moments of a run that checkpoints every step, each time followed
/// by `--resume auto`: it always resumes, ends with the weights of an uninterrupted run, leaves
/// no temporaries and logs each step once.
#[test]
fn killed_at_random_moments_a_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let sets = ["optim.steps=8", "checkpoint.every=1", "checkpoint.keep=2"];
    let whole = d.join("runs/whole");
    let killed = d.join("runs/killed");
    // The uninterrupted run; the times of its checkpoints give a step's length, so the kills
    // spread over the steps rather than the start-up.
    let keep_all = [&sets[..], &["run.name=whole", "checkpoint.keep=0"]].concat();
    succeeded(train(d, &keep_all, &[]).output().unwrap());
    let written = |step: u64| {
        let dir = whole.join(format!("step-{step:07}"));
        std::fs::metadata(dir.join("manifest.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let step = written(8).duration_since(written(1)).unwrap() / 7;
    let mut delays = Delays(0x5eed_c11b);
    let mut landed = vec![];
    for _ in 0..5 {
        let latest = |run: &Path| std::fs::read_link(run.join("latest")).ok();
        let before = latest(&killed);
        let mut child = train(
            d,
            &[&sets[..], &["run.name=killed"]].concat(),
            &["--resume", "auto"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        // Once this process has checkpointed a step, kill it within the next step and a half.
        while latest(&killed) == before && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(step.mul_f64(1.5 * delays.next()));
        child.kill().unwrap();
        child.wait().unwrap();
        landed.push((latest(&killed), temporaries(&killed).len()));
    }
    println!("a step: {step:?}; after each kill, (latest, temporaries left): {landed:?}");
    let stderr = succeeded(
        train(
            d,
            &[&sets[..], &["run.name=killed"]].concat(),
            &["--resume", "auto"],
        )
        .output()
        .unwrap(),
    );
    assert_same_weights(&killed.join("latest"), &whole.join("latest"));
    assert_eq!(temporaries(&killed), Vec::<String>::new(), "{stderr}");
    assert_eq!(steps_logged(&killed), (1..=8).collect::<Vec<u64>>());
}

/// Each step's sample keys of rank 0, as `log.sample_keys` wrote them.
fn sample_keys(run: &Path) -> Vec<(u64, Vec<String>)> {
    std::fs::read_to_string(run.join("sample_keys.rank0.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let keys = v["keys"].as_array().unwrap();
            let keys = keys.iter().map(|k| k.as_str().unwrap().to_string());
            (v["step"].as_u64().unwrap(), keys.collect())
        })
        .collect()
}

#[test]
fn a_stopped_mixture_run_resumes_to_the_samples_and_weights_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    std::fs::write(
        d.join("mix.toml"),
        r#"
extends = "tiny.toml"
[data]
train = ""
mode = "resampled"
[[data.sources]]
name = "first"
train = "syn/train-{000000..000001}.tar"
weight = 3
[[data.sources]]
name = "second"
train = "syn/train-000002.tar"
weight = 1
[log]
sample_keys = true
"#,
    )
    .unwrap();
    let mix = |more: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cliptrain"));
        cmd.args(["train", "--config", "mix.toml"]).args(more);
        succeeded(cmd.current_dir(d).output().unwrap())
    };
    mix(&["--set", "run.name=whole"]);
    mix(&["--set", "run.name=split", "--stop-at-step", "3"]);
    mix(&["--set", "run.name=split", "--resume", "auto"]);
    let runs = d.join("runs");
    let whole = sample_keys(&runs.join("whole"));
    assert_eq!(whole.len(), 6);
    assert_eq!(whole, sample_keys(&runs.join("split")));
    assert_same_weights(&runs.join("whole/latest"), &runs.join("split/latest"));
}
