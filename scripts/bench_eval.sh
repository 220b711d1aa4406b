#!/usr/bin/env bash
# Evaluation speed (issue 15): images/s of reading, decoding and encoding a labelled set into
# features, as `eval linear-probe` / `eval knn` report it, with the models' initial weights
# (speed does not depend on training):
#   - the demo's eval split (data/synth, 2,000 images, the 32-px tiny model of configs/demo.toml);
#   - a 10,000-image 224-px synthetic set (made once in data/bench-eval-224) with ViT-B/32,
#     beside OpenCLIP's ViT-B-32 on the same shards (scripts/bench_eval.py).
#     BENCH_EVAL_SHARDS=N uses the first N shards of 1,000 images instead.
#   scripts/bench_eval.sh [THREADS]      (default 2)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="${1:-2}"
scripts/bootstrap.sh --ref
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked --quiet
BIN="${CLIPTRAIN_BIN:-target/release/cliptrain}"
WORK=data/bench-eval
mkdir -p "$WORK"
TOK=data/clip-tokenizer.json
[[ -f $TOK ]] || python scripts/make_clip_tokenizer.py "$TOK" >/dev/null
# The demo's data and tokenizer, as scripts/demo.sh makes them.
[[ -f data/synth/train-000000.tar ]] || "$BIN" -q data synth --out data/synth >/dev/null
[[ -f data/synth/tokenizer.json ]] || "$BIN" -q tokenizer train \
  --data "data/synth/train-{000000..000007}.tar" --vocab-size 1024 --out data/synth/tokenizer.json >/dev/null
BIG=data/bench-eval-224
[[ -f $BIG/stats.json ]] || "$BIN" -q data synth --out "$BIG" --train 100 --eval 10000 \
  --image-size 224 --shard-size 1000 >/dev/null

# Step-0 checkpoints: the demo's tiny model, and ViT-B/32 with CLIP's tokenizer.
model() { # NAME CONFIG SETS...
  local name=$1 config=$2; shift 2
  [[ -d $WORK/$name/latest ]] || "$BIN" -q train --config "$config" --stop-at-step 0 \
    --set run.output_dir="$WORK" --set run.name="$name" "$@" >/dev/null
}
model demo configs/demo.toml
cat > "$WORK/vit-b-32.toml" <<TOML
extends = "../../configs/models/vit-b-32.toml"
[data]
train = "$BIG/train-000000.tar"
tokenizer = "$TOK"
TOML
model vit-b-32 "$WORK/vit-b-32.toml" --set run.device=cpu

rate() { # CHECKPOINT SPEC CLASSNAMES: images/s of encoding SPEC once, from `eval knn`
  # Both splits are SPEC: the first is encoded (and timed), the second is a hit in a fresh
  # cache, so each image is encoded once.
  local cache
  cache=$(mktemp -d)
  "$BIN" eval knn --checkpoint "$1" --train "$2" --test "$2" --classnames "$3" \
    --cache-dir "$cache" --threads "$THREADS" --device cpu --batch-size 256 2>&1 >/dev/null \
    | sed -n 's/.* encoded at \([0-9.]*\) images\/s.*/\1/p' | head -1
  rm -rf "$cache"
}
demo=$(rate "$WORK/demo" data/synth/eval-000000.tar data/synth/classnames.txt)
SHARDS="${BENCH_EVAL_SHARDS:-10}"   # of 1,000 images each
big_spec="$BIG/eval-{000000..$(printf '%06d' $((SHARDS - 1)))}.tar"
big=$(rate "$WORK/vit-b-32" "$big_spec" "$BIG/classnames.txt")
echo "cliptrain: demo eval split $demo images/s, $((SHARDS * 1000)) x 224 px ViT-B/32 $big images/s"
py=$(python scripts/bench_eval.py "$big_spec" --workers "$THREADS" 2>/dev/null \
  | python -c "import json,sys; print(round(json.loads(sys.stdin.read().strip().splitlines()[-1])['images_per_s'], 1))")
printf '%-44s %12s %12s\n' set cliptrain "OpenCLIP"
printf '%-44s %12s %12s\n' "demo eval split (2,000 x 32 px, tiny)" "$demo/s" "-"
printf '%-44s %12s %12s\n' "synthetic $((SHARDS * 1000)) x 224 px, ViT-B/32" "$big/s" "$py/s"
echo "(fp32 on the CPU; $THREADS threads / workers; batch 256; $(nproc) cores; cliptrain's figure covers reading, decoding and encoding, the whole set)"
