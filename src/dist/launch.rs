//! `cliptrain launch`: starts this node's ranks of a job with torchrun's environment, forwards
//! their output line by line with a rank prefix, and fails the whole job as soon as one rank
//! fails, so a crash never leaves the other ranks waiting on it.
use super::DistError;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The job's shape and rendezvous point, as torchrun's flags.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

/// Runs `program args...` once per local rank and waits for all of them. Errors name the first
/// rank that failed, after the others have been killed. A signal number stored in `forward`
/// (the caller's SIGINT/SIGTERM handler) is taken and sent to every rank.
pub fn launch(
    opts: &LaunchOptions,
    program: &Path,
    args: &[String],
    forward: &AtomicI32,
) -> Result<(), DistError> {
    if opts.nproc_per_node == 0 || opts.nnodes == 0 || opts.node_rank >= opts.nnodes {
        return Err(DistError::Launch(format!(
            "--nproc-per-node {} --nnodes {} --node-rank {}: need at least one process and node, \
             and node-rank below nnodes",
            opts.nproc_per_node, opts.nnodes, opts.node_rank
        )));
    }
    let world = opts.nproc_per_node * opts.nnodes;
    let mut ranks: Vec<(usize, Child)> = Vec::new();
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    for local in 0..opts.nproc_per_node {
        let rank = opts.node_rank * opts.nproc_per_node + local;
        let spawned = Command::new(program)
            .args(args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("LOCAL_WORLD_SIZE", opts.nproc_per_node.to_string())
            .env("GROUP_RANK", opts.node_rank.to_string())
            .env("MASTER_ADDR", &opts.master_addr)
            .env("MASTER_PORT", opts.master_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                kill_all(&mut ranks);
                return Err(DistError::Launch(format!(
                    "starting rank {rank} ({}): {e}",
                    program.display()
                )));
            }
        };
        eprintln!("launch: rank {rank} is pid {}", child.id());
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        pumps.push(pump(out, rank, false));
        pumps.push(pump(err, rank, true));
        ranks.push((rank, child));
    }
    let result = supervise(&mut ranks, forward);
    kill_all(&mut ranks);
    for p in pumps {
        let _ = p.join();
    }
    result
}

/// Polls the ranks until all succeeded or one failed, forwarding signals from `forward`.
fn supervise(ranks: &mut [(usize, Child)], forward: &AtomicI32) -> Result<(), DistError> {
    let mut done = vec![false; ranks.len()];
    loop {
        let sig = forward.swap(0, Ordering::SeqCst);
        if sig != 0 {
            for (_, c) in ranks.iter() {
                // SAFETY: signalling our own child by its pid.
                unsafe { libc::kill(c.id() as libc::pid_t, sig) };
            }
        }
        for (i, (rank, child)) in ranks.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            match child.try_wait() {
                Ok(Some(status)) if status.success() => done[i] = true,
                Ok(Some(status)) => {
                    return Err(DistError::Launch(format!(
                        "rank {rank} (pid {}) {}; stopped the other ranks",
                        child.id(),
                        describe(status)
                    )));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(DistError::Launch(format!("waiting for rank {rank}: {e}")));
                }
            }
        }
        if done.iter().all(|d| *d) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended with {status}"),
    }
}

fn kill_all(ranks: &mut [(usize, Child)]) {
    for (_, c) in ranks.iter_mut() {
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

/// Copies a rank's output to ours, one whole line at a time with a `[rank N]` prefix, so lines
/// of different ranks never interleave mid-line.
fn pump(stream: impl Read + Send + 'static, rank: usize, stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() != Some(&b'\n') {
                        line.push(b'\n');
                    }
                    let prefix = format!("[rank {rank}] ");
                    let _ = if stderr {
                        let mut e = std::io::stderr().lock();
                        e.write_all(prefix.as_bytes())
                            .and_then(|_| e.write_all(&line))
                    } else {
                        let mut o = std::io::stdout().lock();
                        o.write_all(prefix.as_bytes())
                            .and_then(|_| o.write_all(&line))
                            .and_then(|_| o.flush())
                    };
                }
            }
        }
    })
}
