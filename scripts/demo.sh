#!/usr/bin/env bash
# The main job on the embedded default. Today it proves the toolchain end to end: bootstrap
# libtorch (once), build the release binary, show the runtime, and validate the demo config.
# Training on the synthetic dataset is added to this script by the training work (issue 4).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/bootstrap.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked --quiet
BIN=target/release/cliptrain

echo "== runtime"
"$BIN" env
echo
echo "== configs/demo.toml (effective config, defaults filled in)"
"$BIN" config check configs/demo.toml
