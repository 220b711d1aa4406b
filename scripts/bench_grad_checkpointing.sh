#!/usr/bin/env bash
# Peak memory of one training step with and without `model.grad_checkpointing` (issue 14):
# ViT-B/16 (configs/models/vit-b-16.toml), batch 64, fp32 on the CPU, 224-px synthetic images,
# one optimizer step per run; peak RSS from /usr/bin/time, step time from metrics.jsonl.
#   scripts/bench_grad_checkpointing.sh [BATCH] [THREADS]      (defaults 64, 2)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BATCH="${1:-64}"
THREADS="${2:-2}"
scripts/bootstrap.sh --ref
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked --quiet
BIN="${CLIPTRAIN_BIN:-target/release/cliptrain}"
WORK=data/bench-gc
mkdir -p "$WORK"
TOK=data/clip-tokenizer.json
[[ -f $TOK ]] || python scripts/make_clip_tokenizer.py "$TOK" >/dev/null
DATA=data/bench-eval-224
[[ -f $DATA/stats.json ]] || "$BIN" -q data synth --out "$DATA" --train 100 --eval 10000 \
  --image-size 224 --shard-size 1000 >/dev/null
cat > "$WORK/vit-b-16.toml" <<TOML
extends = "../../configs/models/vit-b-16.toml"
[run]
output_dir = "$WORK"
device = "cpu"
threads = $THREADS
[data]
train = "$DATA/train-000000.tar"
tokenizer = "$TOK"
mode = "resampled"
shuffle_buffer = 0
workers = $THREADS
[optim]
batch_size = $BATCH
steps = 1
warmup_steps = 0
[checkpoint]
every = 0
keep = 1
[log]
every = 1
tensorboard = false
progress = "plain"
TOML
printf '%-22s %14s %12s\n' grad_checkpointing "peak RSS MiB" "step s"
for gc in false true; do
  rm -rf "$WORK/gc-$gc"
  /usr/bin/time -f "%M" -o "$WORK/rss-$gc" "$BIN" -q train --config "$WORK/vit-b-16.toml" \
    --set run.name="gc-$gc" --set model.grad_checkpointing=$gc >/dev/null
  rss=$(( $(cat "$WORK/rss-$gc") / 1024 ))
  secs=$(python -c "import json; r=[json.loads(l) for l in open('$WORK/gc-$gc/metrics.jsonl')]; t=[x for x in r if x['kind']=='train'][-1]; print(round($BATCH / t['samples_per_s'], 1))")
  printf '%-22s %14s %12s\n' "$gc" "$rss" "$secs"
done
echo "(ViT-B/16, batch $BATCH, fp32, $THREADS threads, $(nproc) cores; peak RSS of the whole run incl. model, optimizer and checkpoint write)"
