//! `scripts/gpu_check.sh` on a host without a GPU: it says so in one line and exits 2, at once,
//! without writing a report (the GPU path itself runs only on a GPU host; `--cpu-smoke` proves
//! its plumbing and takes minutes, so it is not part of the suite).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this host has an NVIDIA driver, where the no-CUDA path cannot be seen.
fn has_nvidia_driver() -> bool {
    Path::new("/dev/nvidiactl").exists() || Path::new("/proc/driver/nvidia").exists()
}

/// Runs the script with this build's binary and `path_prefix` before PATH; returns its output,
/// how long it took and the output folder it was given.
fn gpu_check(path_prefix: Option<&Path>) -> (Output, Duration, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = path_prefix {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        path = std::env::join_paths(dirs).unwrap();
    }
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(repo().join("scripts/gpu_check.sh"))
        .arg(tmp.path().join("out"))
        .env("CLIPTRAIN_BIN", env!("CARGO_BIN_EXE_cliptrain"))
        .env("PATH", path)
        .env_remove("GPU_CHECK_WORK")
        .env_remove("GPU_CHECK_PYTHON")
        .current_dir(tmp.path())
        .output()
        .expect("run bash scripts/gpu_check.sh");
    (out, started.elapsed(), tmp)
}

fn assert_no_cuda_exit(out: &Output, tmp: &Path, reason: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(
        lines[0].starts_with("gpu_check: no CUDA GPU on this host: "),
        "{stderr}"
    );
    assert!(
        reason.iter().any(|r| lines[0].contains(r)),
        "the reason is one of {reason:?}: {stderr}"
    );
    assert!(lines[0].contains("--cpu-smoke"), "{stderr}");
    assert!(
        !tmp.join("out/gpu_check.json").exists(),
        "no report on a host without CUDA"
    );
}

#[test]
fn gpu_check_without_a_driver_exits_2_at_once() {
    if has_nvidia_driver() || Command::new("nvidia-smi").output().is_ok() {
        eprintln!("skipped: this host has an NVIDIA driver");
        return;
    }
    let (out, took, tmp) = gpu_check(None);
    assert_no_cuda_exit(&out, tmp.path(), &["no NVIDIA driver"]);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn gpu_check_asks_torch_when_a_driver_is_there_and_exits_2_without_cuda() {
    if has_nvidia_driver() {
        eprintln!("skipped: this host has an NVIDIA driver");
        return;
    }
    // A stand-in nvidia-smi gets past the driver check, so the host's torch is asked.
    let bin = tempfile::tempdir().unwrap();
    let smi = bin.path().join("nvidia-smi");
    std::fs::write(&smi, "#!/bin/sh\nexit 9\n").unwrap();
    let mut perms = std::fs::metadata(&smi).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&smi, perms).unwrap();
    let (out, took, tmp) = gpu_check(Some(bin.path()));
    assert_no_cuda_exit(
        &out,
        tmp.path(),
        &["sees no CUDA device", "cannot import torch"],
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
