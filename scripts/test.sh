#!/usr/bin/env bash
# Everything CI runs, on a fresh machine or a warm one: bootstrap the torch venv (once, with the
# pinned reference packages the tests compare against), check formatting, lints and the rustdoc,
# then build and run the whole test suite (one integration-test binary, the examples, the unit
# and doc tests) in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$(date +%s)
scripts/bootstrap.sh --ref
# shellcheck source=scripts/env.sh
source scripts/env.sh
echo "== bootstrap ready after $(( $(date +%s) - start ))s (venv: $CLIPTRAIN_VENV)"

cargo fmt --check
# A dependency that nothing uses fails the run (cargo-machete, pinned, built once beside the venv).
MACHETE_VERSION=0.9.2
TOOLS="$(dirname "$CLIPTRAIN_VENV")/tools"
if ! "$TOOLS/bin/cargo-machete" --version 2>/dev/null | grep -q "$MACHETE_VERSION"; then
  echo "== installing cargo-machete $MACHETE_VERSION into $TOOLS (once)"
  cargo install --quiet --locked --root "$TOOLS" cargo-machete --version "$MACHETE_VERSION"
fi
"$TOOLS/bin/cargo-machete" --skip-target-dir
# --release shares build-script outputs (the torch-sys and shim C++ builds) with the test build.
cargo clippy --release --all-targets --locked -- -D warnings
# The library's docs: intra-doc links checked, warnings (missing_docs on the surface) fail.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --release --locked --quiet
echo "== lints clean after $(( $(date +%s) - start ))s"

cargo test --release --locked
echo "== tests passed after $(( $(date +%s) - start ))s"
