#!/usr/bin/env bash
# End-to-end training throughput: cliptrain vs OpenCLIP on the same model (the tiny preset:
# 64 px, patch 8, 4 x 192 in both towers, context 32), the same shards (data/synth), the same
# tokenizer, batch 256 and the same number of threads. Prints samples/s of both (steps after a
# 5-step warm-up), the ratio, and peak resident memory.
#   scripts/bench_train.sh [THREADS]   (default 2)
# BENCH_PRECISION=bf16 runs both sides under bf16 autocast (OpenCLIP's amp_bf16); default fp32.
# CLIPTRAIN_BIN=/path/to/cliptrain measures that binary instead of building this tree (to compare
# two builds on the same machine, back to back).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="${1:-2}"
STEPS="${BENCH_STEPS:-25}"
PRECISION="${BENCH_PRECISION:-fp32}"

scripts/bootstrap.sh --ref
# shellcheck source=scripts/env.sh
source scripts/env.sh
if [[ -n "${CLIPTRAIN_BIN:-}" ]]; then
  BIN=$CLIPTRAIN_BIN
else
  cargo build --release --locked --quiet
  BIN=$PWD/target/release/cliptrain
fi
DATA=data/synth
[[ -f $DATA/stats.json ]] || "$BIN" -q data synth --out "$DATA" >/dev/null
[[ -f $DATA/tokenizer.json ]] || "$BIN" -q tokenizer train --data "$DATA/train-{000000..000007}.tar" --vocab-size 1024 --out "$DATA/tokenizer.json"
SPEC="$PWD/$DATA/train-{000000..000007}.tar"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/bench.toml" <<TOML
extends = "$PWD/configs/models/tiny.toml"
[run]
name = "bench"
output_dir = "$WORK"
device = "cpu"
threads = $THREADS
precision = "$PRECISION"
[data]
train = "$SPEC"
tokenizer = "$PWD/$DATA/tokenizer.json"
[optim]
batch_size = 256
steps = $STEPS
warmup_steps = 5
lr = 1e-3
weight_decay = 0.1
[checkpoint]
every = 0
[log]
every = 5
tensorboard = false
progress = "plain"
TOML

# Peak RSS of a child process tree, measured the same way for both.
peak() { python -c 'import resource,subprocess,sys; subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss//1024)' "$@"; }

rust_rss=$(peak "$BIN" train --config "$WORK/bench.toml")
rust=$(python - "$WORK/bench/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["kind"] == "train" and r["step"] > 5]
print(round(sum(r["samples_per_s"] for r in rows) / len(rows), 1))
PY
)
py_json=$(python scripts/bench_train.py "$SPEC" --tokenizer "$DATA/tokenizer.json" --threads "$THREADS" --steps "$STEPS" --precision "$PRECISION" 2>/dev/null)
py=$(echo "$py_json" | python -c 'import json,sys; print(round(json.load(sys.stdin)["samples_per_s"],1))')
py_rss=$(echo "$py_json" | python -c 'import json,sys; print(round(json.load(sys.stdin)["peak_rss_mib"]))')
printf '%-10s %14s %16s\n' "" "samples/s" "peak RSS (MiB)"
printf '%-10s %14s %16s\n' cliptrain "$rust" "$rust_rss"
printf '%-10s %14s %16s\n' open_clip "$py" "$py_rss"
echo "ratio: $(echo "$rust $py" | awk '{printf "%.2f", $1/$2}')x  (tiny preset, $PRECISION, batch 256, $THREADS threads, steps 6-$STEPS; open_clip RSS = main process + largest worker)"
