#!/usr/bin/env bash
# Training step time at model.vision.patch_dropout = 0, 0.5 and 0.75 (FLIP) on the CPU: the
# settings run back to back and interleaved (round 1: 0, 0.5, 0.75; round 2: the same ...) so a
# change of machine load hits all three alike. Each run is `cliptrain train` on synthetic shards
# (64 px images, resized to the preset's size by the loader) with metrics logged every step; a
# step's time is batch / samples_per_s of its metrics.jsonl row, the first WARMUP steps left out.
# Prints, per setting, the median step time over all rounds and the load average at the start.
#   scripts/bench_patch_dropout.sh PRESET [BATCH] [STEPS] [ROUNDS]
#   e.g. scripts/bench_patch_dropout.sh tiny 32 30 2; scripts/bench_patch_dropout.sh vit-b-16 32 4 2
# CLIPTRAIN_BIN=/path/to/cliptrain measures that binary instead of building this tree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PRESET="${1:?usage: bench_patch_dropout.sh PRESET [BATCH] [STEPS] [ROUNDS]}"
BATCH="${2:-32}"
STEPS="${3:-20}"
ROUNDS="${4:-2}"
WARMUP="${BENCH_WARMUP:-2}"
THREADS="${BENCH_THREADS:-2}"
SETTINGS=(0.0 0.5 0.75)

# shellcheck source=scripts/env.sh
source scripts/env.sh
if [[ -n "${CLIPTRAIN_BIN:-}" ]]; then
  BIN=$CLIPTRAIN_BIN
else
  cargo build --release --locked --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/cliptrain
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && "$BIN" -q data synth --out syn --train 2000 --eval 0 --shard-size 1000 >/dev/null &&
  "$BIN" -q tokenizer train --data "syn/train-{000000..000001}.tar" --vocab-size 1024 --out syn/tok.json)

run() { # setting round
  local name="pd$1-r$2"
  cat > "$WORK/$name.toml" <<TOML
extends = "$PWD/configs/models/$PRESET.toml"
[run]
name = "$name"
output_dir = "$WORK/runs"
device = "cpu"
threads = $THREADS
[data]
train = "$WORK/syn/train-{000000..000001}.tar"
tokenizer = "$WORK/syn/tok.json"
shuffle_buffer = 64
workers = 1
[model.vision]
patch_dropout = $1
[optim]
batch_size = $BATCH
steps = $STEPS
warmup_steps = 1
[checkpoint]
every = 0
[log]
every = 1
tensorboard = false
progress = "plain"
TOML
  "$BIN" -q train --config "$WORK/$name.toml" >/dev/null
  # The final checkpoint is not measured; it only takes disk.
  rm -rf "$WORK/runs/$name"/step-* "$WORK/runs/$name/latest"
}

echo "preset $PRESET, batch $BATCH, $STEPS steps ($WARMUP left out) x $ROUNDS rounds, $THREADS threads"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  for p in "${SETTINGS[@]}"; do
    run "$p" "$r"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK/runs" "$BATCH" "$WARMUP" "${SETTINGS[@]}" <<'PY'
import json, statistics, sys
from pathlib import Path
runs, batch, warmup, settings = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
base = None
for p in settings:
    ms, compute = [], []
    for d in sorted(runs.glob(f"pd{p}-r*")):
        rows = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if l.strip()]
        rows = [r for r in rows if "samples_per_s" in r][warmup:]
        ms += [1e3 * batch / r["samples_per_s"] for r in rows]
        # The part of the step not spent waiting for the loader.
        compute += [1e3 * batch / r["samples_per_s"] * (1 - r["data_wait_fraction"]) for r in rows]
    med, cmed = statistics.median(ms), statistics.median(compute)
    base = base or (med, cmed)
    print(f"patch_dropout {p}: median {med:.0f} ms/step over {len(ms)} steps "
          f"(min {min(ms):.0f}, max {max(ms):.0f}), {base[0] / med:.2f}x the step at 0; "
          f"without data wait {cmed:.0f} ms ({base[1] / cmed:.2f}x)")
PY
