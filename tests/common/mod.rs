//! Helpers shared by the integration tests.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod tiny_run;

/// Runs the built `cliptrain` binary in `cwd`.
pub fn cliptrain(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run cliptrain")
}

/// The stdout of a run that must have succeeded (its stderr otherwise).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The torch venv's python (the one `scripts/env.sh` puts first on PATH), which has the pinned
/// reference packages. Missing, it fails the test with the fix rather than skipping it.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("CLIPTRAIN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/cliptrain/venv-torch-2.11.0")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no python at {}: run scripts/bootstrap.sh --ref (or set CLIPTRAIN_VENV)",
        python.display()
    );
    python
}
