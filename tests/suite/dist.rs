//! Multi-process training on CPU (Gloo over 127.0.0.1): a 2-rank job equals one process on the
//! whole batch, resumes exactly with its own world size and elastically with another, and fails
//! cleanly when a rank dies or hangs.
use crate::common::tiny::tiny;
use crate::common::{cliptrain, ok, small_synth};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

/// A TCP port nobody listens on right now (the OS picks it; released before use).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The data and a tiny CLIP, arranged so that "the same data order" holds by construction:
/// - 20 shards of exactly 4 samples (= the per-rank batch of 8 / 2 ranks) and no sample
///   shuffle: rank r reads shard `perm[2s + r]` at step s, where `perm` (the epoch's shard
///   permutation) depends only on the seed, the epoch and the shard count; a single process
///   reads `perm[2s]` then `perm[2s + 1]` at step s — the same 8 pairs, rank 0's first, which is
///   exactly the order of the gathered batch;
/// - crop_scale = [1, 1] on square 32 px images: the crop is the whole image whatever the
///   sample's index in its stream (which does differ between the two arrangements);
/// - optim.eps = 1e-3: the attention key biases have an exactly-zero true gradient (softmax
///   ignores a shift shared by all keys), and with eps = 1e-6 AdamW turns their rounding noise
///   into ±lr steps — 1e-4 apart even between one process with and without micro-batching. A
///   larger eps keeps that noise below 1e-9 while the real gradients still train.
fn setup(d: &Path) {
    small_synth(d, 80, 8, 4);
    tiny()
        .sets(&[
            r#"data.train="syn/train-{000000..000019}.tar""#,
            "data.shuffle_buffer=0",
            "data.crop_scale=[1.0, 1.0]",
            "optim.steps=10",
            "optim.eps=1e-3",
            "checkpoint.every=5",
            "dist.timeout_s=10",
        ])
        .write(d.join("tiny.toml"));
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

fn weights(run: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(run.join("latest/model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// Largest |a - b| over the losses and over every weight.
fn max_diffs(a: &Path, b: &Path) -> (f64, f64) {
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len(), "{} vs {}", a.display(), b.display());
    let dl = la
        .iter()
        .zip(&lb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    let dw = wa
        .iter()
        .zip(&wb)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max);
    (dl, dw)
}

/// `cliptrain launch --nproc-per-node 2 -- train --config tiny.toml ARGS...`, which must succeed.
fn launch2(d: &Path, args: &[&str]) -> String {
    let port = free_port().to_string();
    let mut all = vec![
        "launch",
        "--nproc-per-node",
        "2",
        "--master-port",
        &port,
        "--",
        "train",
        "--config",
        "tiny.toml",
    ];
    all.extend_from_slice(args);
    ok(cliptrain(&all, d))
}

#[test]
fn two_ranks_train_exactly_like_one_process_on_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let runs = d.join("runs");
    ok(cliptrain(
        &["train", "--config", "tiny.toml", "--set", "run.name=one"],
        d,
    ));
    let out = launch2(d, &["--set", "run.name=two"]);
    // One summary for the job, from rank 0.
    assert!(out.contains("[rank 0] steps 0..10 of 10"), "{out}");
    assert!(!out.contains("[rank 1] steps"), "{out}");
    launch2(
        d,
        &[
            "--set",
            "run.name=micro",
            "--set",
            "optim.micro_batch_size=2",
        ],
    );
    launch2(
        d,
        &[
            "--set",
            "run.name=local",
            "--set",
            "optim.micro_batch_size=2",
            "--set",
            "dist.local_loss=true",
            "--set",
            "dist.gather_with_grad=true",
        ],
    );
    for name in ["two", "micro", "local"] {
        let (dl, dw) = max_diffs(&runs.join("one"), &runs.join(name));
        eprintln!("{name}: max loss diff {dl:.3e}, max weight diff {dw:.3e}");
        assert!(dl <= 1e-5, "{name}: losses differ by {dl}");
        assert!(dw <= 1e-5, "{name}: weights differ by {dw}");
    }
    // The comparison is sharp enough to see an approximation: local_loss without
    // gather_with_grad drops the other ranks' gradient terms.
    launch2(
        d,
        &["--set", "run.name=approx", "--set", "dist.local_loss=true"],
    );
    let (_, dw) = max_diffs(&runs.join("one"), &runs.join("approx"));
    assert!(dw > 1e-4, "local_loss alone should differ, by {dw}");

    // Only rank 0 writes; the checkpoint holds both ranks' data positions, one per rank.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join("two/latest/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["ranks"].as_array().unwrap().len(), 2);
    assert_ne!(state["ranks"][0], state["ranks"][1]);
    assert!(state.get("data").is_none() && state.get("rank_data").is_none());

    // A stopped 2-rank run resumes (with 2 ranks) to the uninterrupted run's weights
    // (checkpointing by the clock after nearly every step on the way: both ranks must agree on
    // rank 0's decision, or the job would hang or fail in the checkpoint's collectives).
    let out = launch2(
        d,
        &[
            "--set",
            "run.name=split",
            "--stop-at-step",
            "5",
            "--set",
            "checkpoint.every_minutes=0.000001",
        ],
    );
    let timed = (1..5)
        .filter(|s| runs.join(format!("split/step-000000{s}")).is_dir())
        .count();
    assert!(timed >= 2, "few time-based checkpoints ({timed}): {out}");
    launch2(d, &["--set", "run.name=split", "--resume", "auto"]);
    let (dl, dw) = max_diffs(&runs.join("two"), &runs.join("split"));
    assert!(dl == 0.0 && dw == 0.0, "resume: losses {dl}, weights {dw}");
}

/// Every sample key of steps 1..=10 over all ranks (`log.sample_keys`), sorted; each step
/// must have its full global batch of 8.
fn epoch_keys(run: &Path) -> Vec<String> {
    let mut by_step: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for entry in std::fs::read_dir(run).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("sample_keys.rank") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let keys = v["keys"].as_array().unwrap().iter();
            let step = by_step.entry(v["step"].as_u64().unwrap()).or_default();
            step.extend(keys.map(|k| k.as_str().unwrap().to_string()));
        }
    }
    assert_eq!(
        by_step.keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(by_step.values().all(|k| k.len() == 8), "{by_step:?}");
    let mut all: Vec<String> = by_step.into_values().flatten().collect();
    all.sort();
    all
}

/// The tiny run's 10 steps of 8 are exactly one epoch of its 80 samples: a job stopped at step
/// 5 and resumed with another number of processes (2 -> 1, 1 -> 2) still reads each sample of
/// the epoch once, like the uninterrupted run.
#[test]
fn a_job_resumed_with_another_number_of_processes_reads_every_sample_of_the_epoch_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let runs = d.join("runs");
    let keys = ["--set", "log.sample_keys=true"];
    let single = |more: &[&str]| {
        let mut args = vec!["train", "--config", "tiny.toml"];
        args.extend_from_slice(&keys);
        args.extend_from_slice(more);
        ok(cliptrain(&args, d))
    };
    single(&["--set", "run.name=one"]);
    let one = epoch_keys(&runs.join("one"));
    let distinct: std::collections::BTreeSet<&String> = one.iter().collect();
    assert_eq!(
        distinct.len(),
        80,
        "the uninterrupted run reads each sample once"
    );

    launch2(
        d,
        &[
            &keys[..],
            &["--set", "run.name=shrink", "--stop-at-step", "5"],
        ]
        .concat(),
    );
    let out = single(&["--set", "run.name=shrink", "--resume", "auto"]);
    assert!(out.contains("steps 5..10"), "{out}");
    assert_eq!(
        epoch_keys(&runs.join("shrink")),
        one,
        "2 ranks -> 1 process"
    );

    single(&["--set", "run.name=grow", "--stop-at-step", "5"]);
    launch2(
        d,
        &[&keys[..], &["--set", "run.name=grow", "--resume", "auto"]].concat(),
    );
    assert_eq!(epoch_keys(&runs.join("grow")), one, "1 process -> 2 ranks");

    // The global batch must still split evenly over the new number of processes.
    let port = free_port().to_string();
    let out = cliptrain(
        &[
            "launch",
            "--nproc-per-node",
            "3",
            "--master-port",
            &port,
            "--",
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "run.name=grow",
            "--resume",
            "auto",
        ],
        d,
    );
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("optim.batch_size = 8 must be divisible"),
        "{text}"
    );
}

/// Kills `child` if a test fails before it has ended.
struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `run` has logged at least one step (all ranks are past rendezvous), or panics.
fn wait_for_training(run: &Path, procs: &mut Reap) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|s| s.lines().count() > 0) {
        for c in &mut procs.0 {
            assert!(
                c.try_wait().unwrap().is_none(),
                "a process ended before training started"
            );
        }
        assert!(Instant::now() < deadline, "training did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` to exit within `limit`; its status and stderr.
fn exit_within(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            return (status, err);
        }
        assert!(
            Instant::now() < deadline,
            "still running after {limit:?}: a dead or hung rank must not hang the others"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_hung_rank_makes_the_other_fail_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // Started as torchrun would, without the launcher: rank 0 must notice on its own.
    let port = free_port().to_string();
    let mut procs = Reap(Vec::new());
    for rank in 0..2 {
        let child = Command::new(env!("CARGO_BIN_EXE_cliptrain"))
            .args(["train", "--config", "tiny.toml"])
            .args(["--set", "run.name=hang", "--set", "optim.steps=100000"])
            .args(["--set", "dist.timeout_s=3", "--set", "checkpoint.every=0"])
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", "2")
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        procs.0.push(child);
    }
    wait_for_training(&d.join("runs/hang"), &mut procs);
    let rank1 = procs.0[1].id() as libc::pid_t;
    // SAFETY: stopping (then killing) our own child by its pid.
    unsafe { libc::kill(rank1, libc::SIGSTOP) };
    let started = Instant::now();
    let (status, err) = exit_within(&mut procs.0[0], Duration::from_secs(60));
    eprintln!(
        "rank 0 failed {:.1} s after rank 1 hung",
        started.elapsed().as_secs_f64()
    );
    assert!(!status.success());
    assert!(
        err.contains("failed on rank 0 of 2") && err.contains("dist.timeout_s = 3"),
        "{err}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(rank1, libc::SIGKILL) };
}

/// Starts `cliptrain launch --nproc-per-node 2 -- train` of tiny.toml as run `name`, training
/// for a long time; returns the launcher, its stderr and the ranks' pids (which the launcher
/// names first thing on stderr).
fn launch_long(d: &Path, name: &str) -> (Child, BufReader<std::process::ChildStderr>, Vec<i32>) {
    let port = free_port().to_string();
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args([
            "launch",
            "--nproc-per-node",
            "2",
            "--master-port",
            &port,
            "--",
        ])
        .args(["train", "--config", "tiny.toml", "--set"])
        .arg(format!("run.name={name}"))
        .args(["--set", "optim.steps=100000", "--set", "checkpoint.every=0"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(launcher.stderr.take().unwrap());
    let mut pids = Vec::new();
    let mut line = String::new();
    while pids.len() < 2 {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "launcher ended");
        if let Some(rest) = line.trim().strip_prefix("launch: rank ") {
            let pid: i32 = rest.rsplit(' ').next().unwrap().parse().unwrap();
            pids.push(pid);
        }
    }
    (launcher, stderr, pids)
}

/// The stop vote is read a step late (the host never waits for the step it just queued), yet
/// a signal that reaches one rank only still stops both at the same step, with a checkpoint.
#[test]
fn a_signal_to_one_rank_stops_both_at_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (launcher, mut stderr, pids) = launch_long(d, "sig");
    let mut procs = Reap(vec![launcher]);
    wait_for_training(&d.join("runs/sig"), &mut procs);
    // SAFETY: signalling a process this test started (through the launcher) by its pid.
    unsafe { libc::kill(pids[1], libc::SIGINT) };
    let (status, _) = exit_within(&mut procs.0[0], Duration::from_secs(60));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("runs/sig/latest/state.json")).unwrap(),
    )
    .unwrap();
    // Both ranks left the loop at the same step: otherwise the one still training would have
    // waited in a collective for the other and the job failed on its timeout.
    assert!(state["step"].as_u64().unwrap() >= 1, "{state}");
}

#[test]
fn the_launcher_fails_the_job_when_a_rank_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (launcher, mut stderr, pids) = launch_long(d, "kill");
    let mut procs = Reap(vec![launcher]);
    wait_for_training(&d.join("runs/kill"), &mut procs);
    // SAFETY: killing a process this test started (through the launcher) by its pid.
    unsafe { libc::kill(pids[1], libc::SIGKILL) };
    let (status, _) = exit_within(&mut procs.0[0], Duration::from_secs(30));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(!status.success());
    assert!(
        rest.contains(&format!(
            "error: rank 1 (pid {}) was killed by signal 9; stopped the other ranks",
            pids[1]
        )),
        "{rest}"
    );
    // Rank 0 was stopped and reaped by the launcher, not left behind.
    assert!(!Path::new(&format!("/proc/{}", pids[0])).exists());
}

/// The NCCL backend is part of every build made through scripts/env.sh (bootstrap fetches the
/// CUDA headers it needs), and on a host without GPUs creating it is a clean error, not an abort.
#[test]
fn nccl_is_compiled_in_and_fails_cleanly_without_a_gpu() {
    use cliptrain::dist::{Backend, ProcessGroup};
    assert!(
        Backend::Nccl.compiled_in(),
        "built without the NCCL process group: build after `source scripts/env.sh` (which sets \
         CLIPTRAIN_NCCL=1 once scripts/bootstrap.sh has fetched the CUDA headers)"
    );
    if tch::Cuda::is_available() {
        return; // a GPU host runs the real thing (docs: gpu checks)
    }
    let err = ProcessGroup::join(
        "127.0.0.1",
        free_port(),
        0,
        1,
        Backend::Nccl,
        Duration::from_secs(10),
    )
    .err()
    .expect("an NCCL group without GPUs");
    assert!(err.to_string().contains("GPU"), "{err}");
}
