#!/usr/bin/env bash
# The main job on the embedded default. Today: bootstrap libtorch (once), build the release
# binary, show the runtime, validate the demo config, generate the synthetic dataset and its
# tokenizer (once), and inspect the shards. Training on them joins with the training work.
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

DATA=data/synth
if [[ ! -f $DATA/stats.json ]]; then
  echo
  echo "== generating the synthetic dataset in $DATA"
  "$BIN" data synth --out "$DATA"
fi
if [[ ! -f $DATA/tokenizer.json ]]; then
  echo
  echo "== training the demo's BPE tokenizer on its captions"
  "$BIN" tokenizer train --data "$DATA/train-{000000..000007}.tar" --vocab-size 1024 --out "$DATA/tokenizer.json"
fi
echo
echo "== the training shards"
"$BIN" data inspect "$DATA/train-{000000..000007}.tar" | head -6
