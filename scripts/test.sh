#!/usr/bin/env bash
# Everything CI runs, on a fresh machine or a warm one: bootstrap the torch venv (once, with the
# pinned reference packages the tests compare against), check formatting and lints, then build and
# run the whole test suite in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$(date +%s)
scripts/bootstrap.sh --ref
# shellcheck source=scripts/env.sh
source scripts/env.sh
echo "== bootstrap ready after $(( $(date +%s) - start ))s (venv: $CLIPTRAIN_VENV)"

cargo fmt --check
# --release shares build-script outputs (the torch-sys and shim C++ builds) with the test build.
cargo clippy --release --all-targets --locked -- -D warnings
echo "== lints clean after $(( $(date +%s) - start ))s"

cargo test --release --locked
echo "== tests passed after $(( $(date +%s) - start ))s"
