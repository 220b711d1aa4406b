#!/usr/bin/env bash
# The main job on the embedded default: bootstrap libtorch (once), build the release binary,
# show the runtime, validate the demo config, generate the synthetic dataset and its tokenizer
# (once), then train the small CLIP of configs/demo.toml on 2 CPU cores (under 10 minutes) and
# print its summary, then evaluate the final checkpoint zero-shot on the held-out eval split
# (8 of its 48 classes never appear in training captions).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/bootstrap.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked --quiet
BIN=target/release/cliptrain

echo "== runtime"
"$BIN" env

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
echo "== configs/demo.toml"
# A previous demo run is replaced: gone before the check, which (as train) refuses a run folder
# that already has checkpoints.
rm -rf checkpoints/demo
"$BIN" -q config check configs/demo.toml >/dev/null && echo "valid, with the files it names (cliptrain config check configs/demo.toml prints it in full)"
echo
echo "== the training shards"
"$BIN" data inspect "$DATA/train-{000000..000007}.tar" | head -6

echo
echo "== training (configs/demo.toml; a previous demo run in checkpoints/demo was replaced)"
"$BIN" train --config configs/demo.toml

echo
echo "== zero-shot evaluation of the final checkpoint (JSON and confusion-matrix PNG in checkpoints/demo/)"
"$BIN" -q eval zeroshot --checkpoint checkpoints/demo \
  --data "$DATA/eval-000000.tar" --classnames "$DATA/classnames.txt" \
  --templates "$DATA/templates.txt" --classes-subset "$DATA/classes_seen.txt" \
  --json checkpoints/demo/zeroshot.json --plot checkpoints/demo/zeroshot.png

echo
echo "== training curves (loss, learning rate, temperature, evaluations) of the run"
"$BIN" plot checkpoints/demo --out checkpoints/demo/curves.png
