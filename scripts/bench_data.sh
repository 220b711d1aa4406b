#!/usr/bin/env bash
# Data-path throughput, cliptrain beside the Python pipeline OpenCLIP users run (webdataset +
# PIL + torchvision + open_clip tokenize in DataLoader workers), on the same shards, cores and
# batch size. Shards: 8,000 synthetic 256-px JPEGs (made once in data/bench-256).
#   scripts/bench_data.sh [THREADS]      (default 2)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="${1:-2}"
BATCHES="${BENCH_BATCHES:-30}"

scripts/bootstrap.sh --ref
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked --quiet
BIN=target/release/cliptrain
DATA=data/bench-256
TOK=data/clip-tokenizer.json
[[ -f $DATA/stats.json ]] || "$BIN" -q data synth --out "$DATA" --train 8000 --eval 8 --image-size 256 --shard-size 1000 >/dev/null
[[ -f $TOK ]] || python scripts/make_clip_tokenizer.py "$TOK" >/dev/null
SPEC="$DATA/train-{000000..000007}.tar"

field() { python -c "import json,sys; print(round(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1']))"; }
printf '%-6s %12s %12s %8s %16s\n' size cliptrain python ratio "decode-only"
for size in 224 64; do
  rust_json=$("$BIN" -q bench data "$SPEC" --tokenizer "$TOK" --threads "$THREADS" --image-size "$size" --batches "$BATCHES" --json)
  py_json=$(python scripts/bench_data.py "$SPEC" --workers "$THREADS" --image-size "$size" --batches "$BATCHES" --json 2>/dev/null)
  rust=$(echo "$rust_json" | field images_per_s)
  floor=$(echo "$rust_json" | field decode_only_images_per_s)
  py=$(echo "$py_json" | field images_per_s)
  printf '%-6s %12s %12s %7.2fx %16s\n' "$size" "$rust/s" "$py/s" "$(echo "$rust $py" | awk '{print $1/$2}')" "$floor/s"
done
echo "(images/s after one warm-up batch; $THREADS threads / workers; batch 256; $(nproc) cores)"
