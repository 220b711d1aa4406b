//! Helpers shared by the integration tests.
use std::path::PathBuf;

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
