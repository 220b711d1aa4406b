#!/usr/bin/env bash
# The one-shot GPU check (issue 13): on a host with a CUDA GPU, in under 8 minutes, runs
#   1. `cliptrain env` (CUDA available, the device), the binary running on the host's torch;
#   2. a tiny bf16 run on cuda that checkpoints at step 10, then resumes to step 20 (loss finite);
#   3. a tiny SigLIP (model.kind = "siglip") with patch dropout and activation checkpointing, bf16
#      on cuda, 10 steps (loss finite);
#      a 1-rank NCCL job through `cliptrain launch --nproc-per-node 1` (loss finite);
#   4. ViT-B/32, 224 px, bf16, AdamW at batch 256 and at 1024 with micro-batch 256, for cliptrain
#      and for OpenCLIP (scripts/bench_train.py; same shards, tokenizer, hyper-parameters and
#      loader cores): samples/s over steps 11-40, data-wait fraction, peak GPU memory, model
#      FLOPs and MFU against the card's dense bf16 peak;
# and writes OUT/gpu_check.json, OUT/gpu_check.md (also printed) and OUT/gpu_check_logs.tar.gz.
#
#   scripts/gpu_check.sh [OUT]            (default OUT: gpu_check/)
#   scripts/gpu_check.sh --cpu-smoke [OUT]
#
# --cpu-smoke runs every phase on the CPU with tiny sizes (a 32-px, 2 x 64 CLIP, fp32, 20 steps at
# batch 16 / 32 with micro-batch 16, Gloo instead of NCCL) to prove the plumbing on a machine
# without a GPU: 2-7 minutes on 2 cores (its budget is 900 s).
# Without CUDA (and without --cpu-smoke) it prints one line saying so and exits 2. Otherwise the
# exit code is 0 when every phase passed, 1 when one failed, timed out or was skipped.
#
# Every phase runs under its own `timeout`, clipped to what is left of the whole budget
# (GPU_CHECK_BUDGET_S, default 450 s); a phase that fails is recorded with its stderr tail and
# the next one runs. The report is rewritten after each phase.
#
# The binary: $CLIPTRAIN_BIN, else `cliptrain` at the top of a bundle (scripts/gpu_bundle.sh),
# else ${CARGO_TARGET_DIR:-target}/release/cliptrain. It runs on the torch libraries of `python3`
# (GPU_CHECK_PYTHON), which must be torch 2.11. OpenCLIP's packages come from the host, or from
# the bundle's wheels/ (installed into the scratch folder, never into the host's Python).
# GPU_CHECK_SET="key=value ..." adds `--set key=value` to every cliptrain run (say
# "data.prefetch=2" where the host's available memory refuses batch 1024's loader queue).
# Scratch data and runs go to GPU_CHECK_WORK (default: a temporary folder, removed at the end
# unless GPU_CHECK_KEEP=1).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SMOKE=0
OUT_ARG=""
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) SMOKE=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check: unknown option $arg (see --help)" >&2; exit 1 ;;
    *) OUT_ARG=$arg ;;
  esac
done
PY=${GPU_CHECK_PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-$((SMOKE == 1 ? 900 : 450))}

no_cuda() {
  echo "gpu_check: no CUDA GPU on this host: $1 (scripts/gpu_check.sh --cpu-smoke runs the plumbing on the CPU)" >&2
  exit 2
}

# --- CUDA first. No NVIDIA driver at all is told at once; otherwise the host's torch decides
# (and lends the binary its libraries).
if [[ $SMOKE == 0 && ! -e /dev/nvidiactl && ! -d /proc/driver/nvidia ]] && ! command -v nvidia-smi >/dev/null; then
  no_cuda "no NVIDIA driver (no /dev/nvidiactl, /proc/driver/nvidia or nvidia-smi)"
fi
probe=$(timeout 120 "$PY" -c 'import os, torch
ok = torch.cuda.is_available()
print(torch.__version__)
print(os.path.join(os.path.dirname(torch.__file__), "lib"))
print(int(ok), torch.cuda.device_count() if ok else 0)
print(torch.cuda.get_device_name(0) if ok else "cpu")' 2>/dev/null) ||
  no_cuda "$PY cannot import torch (or did not answer within 120 s)"
TORCH_VERSION=$(sed -n 1p <<<"$probe")
TORCH_LIB=$(sed -n 2p <<<"$probe")
read -r CUDA_OK CUDA_COUNT <<<"$(sed -n 3p <<<"$probe")"
DEVICE_NAME=$(sed -n 4p <<<"$probe")
if [[ $SMOKE == 0 && $CUDA_OK != 1 ]]; then
  no_cuda "torch $TORCH_VERSION in $PY sees no CUDA device"
fi

if [[ -n "${CLIPTRAIN_BIN:-}" ]]; then
  BIN=$CLIPTRAIN_BIN
elif [[ -x "$ROOT/cliptrain" ]]; then
  BIN=$ROOT/cliptrain
else
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cliptrain
fi
[[ -x "$BIN" ]] || { echo "gpu_check: no cliptrain binary at $BIN (set CLIPTRAIN_BIN, or build: cargo build --release --locked)" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

OUT=${OUT_ARG:-gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/gpu_check.json" "$OUT/gpu_check.md" "$OUT/gpu_check_logs.tar.gz"
if [[ -n "${GPU_CHECK_WORK:-}" ]]; then
  WORK=$GPU_CHECK_WORK
  mkdir -p "$WORK"
  WORK=$(cd "$WORK" && pwd)
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
fi
LOGS=$WORK/logs
rm -rf "$LOGS" "$WORK/runs" "$WORK/phases.tsv"
mkdir -p "$LOGS" "$WORK/runs" "$WORK/configs"
SAMPLER=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  if [[ -n "$SAMPLER" ]]; then kill "$SAMPLER" 2>/dev/null || true; fi
  if [[ "${GPU_CHECK_KEEP:-0}" != 1 && -z "${GPU_CHECK_WORK:-}" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- Sizes. Both sides get the same loader cores; data is re-drawn from the shards (resampled).
CORES=$(nproc)
if [[ $SMOKE == 1 ]]; then
  # A CLIP smaller than the tiny preset (32 px, 2 x 64 in both towers), fast on any CPU.
  MODE=cpu-smoke DEVICE=cpu PRECISION=fp32 PRESET=smoke
  CORES=$((CORES < 2 ? CORES : 2))
  SYNTH_N=512 SHARD=128 TINY_BATCH=16 BATCH_S=16 BATCH_L=32 MICRO=16
  STEPS=20 LOG_EVERY=5 WINDOW_FROM=5 # windows end at 10, 15, 20: steps 6-20
  PRESET_TOML=$WORK/configs/smoke-model.toml
  TINY_TOML=$PRESET_TOML
  SIGLIP_TOML=$WORK/configs/smoke-siglip.toml
  cat >"$SIGLIP_TOML" <<'TOML'
extends = "smoke-model.toml"
[model]
kind = "siglip"
activation = "gelu_tanh"
layer_norm_eps = 1e-6
[loss]
kind = "siglip"
TOML
  cat >"$PRESET_TOML" <<'TOML'
[model]
embed_dim = 64
activation = "gelu"
[model.vision]
image_size = 32
patch_size = 8
width = 64
layers = 2
heads = 2
[model.text]
vocab_size = 1024
context_length = 16
width = 64
layers = 2
heads = 2
TOML
else
  MODE=gpu DEVICE=cuda PRECISION=bf16 PRESET=vit-b-32
  SYNTH_N=8192 SHARD=256 TINY_BATCH=128 BATCH_S=256 BATCH_L=1024 MICRO=256
  STEPS=40 LOG_EVERY=10 WINDOW_FROM=10 # windows end at 20, 30, 40: steps 11-40
  PRESET_TOML=$ROOT/configs/models/$PRESET.toml
  TINY_TOML=$ROOT/configs/models/tiny.toml
  SIGLIP_TOML=$ROOT/configs/models/siglip-tiny.toml
fi
DATA=$WORK/data
LAST_SHARD=$(printf '%06d' $(((SYNTH_N + SHARD - 1) / SHARD - 1)))
SPEC="$DATA/train-{000000..$LAST_SHARD}.tar"
TOKENIZER=$DATA/tokenizer.json
PORT=$((29500 + RANDOM % 1000))
SETS=()
for kv in ${GPU_CHECK_SET:-}; do SETS+=(--set "$kv"); done
REV=$(cat "$ROOT/REVISION" 2>/dev/null || git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

{
  printf 'mode\t%s\n' "$MODE"
  printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf 'host\t%s\n' "$(uname -n)"
  printf 'cores\t%s\n' "$CORES"
  printf 'torch\t%s\n' "$TORCH_VERSION"
  printf 'torch_lib\t%s\n' "$TORCH_LIB"
  printf 'cuda_devices\t%s\n' "$CUDA_COUNT"
  printf 'device_name\t%s\n' "$DEVICE_NAME"
  printf 'binary\t%s\n' "$BIN"
  printf 'revision\t%s\n' "$REV"
  printf 'budget_s\t%s\n' "$BUDGET"
  printf 'preset\t%s\n' "$PRESET"
  printf 'preset_toml\t%s\n' "$PRESET_TOML"
  printf 'precision\t%s\n' "$PRECISION"
  printf 'batch_small\t%s\n' "$BATCH_S"
  printf 'batch_large\t%s\n' "$BATCH_L"
  printf 'micro\t%s\n' "$MICRO"
  printf 'steps\t%s\n' "$STEPS"
  printf 'log_every\t%s\n' "$LOG_EVERY"
  printf 'window_from\t%s\n' "$WINDOW_FROM"
  printf 'synth_samples\t%s\n' "$SYNTH_N"
  printf 'overrides\t%s\n' "${GPU_CHECK_SET:-}"
} >"$WORK/meta.tsv"

# --- Peak GPU memory, the same way for both sides: nvidia-smi's memory.used of the card every
# 200 ms during a phase, minus the reading just before it.
GPU_INDEX=0
[[ "${CUDA_VISIBLE_DEVICES:-}" =~ ^[0-9]+ ]] && GPU_INDEX=${BASH_REMATCH[0]}
have_smi=0
[[ $SMOKE == 0 ]] && command -v nvidia-smi >/dev/null && have_smi=1
smi_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$GPU_INDEX" 2>/dev/null | head -1; }

# The report and the log archive are rewritten after every phase, so a check cut short by an
# outer time limit still leaves them.
report() {
  "$PY" "$HERE/gpu_check_report.py" "$WORK" "$OUT" >/dev/null || echo "gpu_check: the report failed" >&2
  cp "$WORK/meta.tsv" "$WORK/phases.tsv" "$LOGS/" 2>/dev/null || true
  local run
  for run in "$WORK"/runs/*/; do
    if [[ -f "$run/metrics.jsonl" ]]; then cp "$run/metrics.jsonl" "$LOGS/$(basename "$run").metrics.jsonl"; fi
  done
  tar czf "$OUT/gpu_check_logs.tar.gz" -C "$WORK" logs configs 2>/dev/null || true
}

START=$SECONDS
DEADLINE=$((START + BUDGET))
RESERVE=15 # the kill grace after a timeout, the report and the log archive

# phase NAME LIMIT_S COMMAND...: runs COMMAND under timeout, logs to LOGS/NAME.{out,err}, appends
# "name rc seconds limit mem_baseline mem_peak" to phases.tsv and rewrites the report.
phase() {
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - SECONDS - RESERVE))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    printf '%s\tskipped\t0\t0\t\t\n' "$name" >>"$WORK/phases.tsv"
    echo "[gpu_check] $name: skipped (the ${BUDGET} s budget is spent)" >&2
    report
    return 0
  fi
  echo "[gpu_check] $name (limit ${limit} s)" >&2
  local base="" peak="" t0=$SECONDS rc=0
  if [[ $have_smi == 1 ]]; then
    base=$(smi_used || true)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$GPU_INDEX" -lms 200 \
      >"$LOGS/$name.mem" 2>/dev/null &
    SAMPLER=$!
  fi
  timeout -k 5 "$limit" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err" || rc=$?
  if [[ -n "$SAMPLER" ]]; then
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=""
    peak=$(sort -n "$LOGS/$name.mem" 2>/dev/null | tail -1 | tr -d ' ' || true)
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" "$base" "$peak" >>"$WORK/phases.tsv"
  echo "[gpu_check] $name: exit $rc after $((SECONDS - t0)) s" >&2
  report
}

# write_config NAME PRESET_TOML BATCH MICRO STEPS LOG_EVERY CHECKPOINT_EVERY
write_config() {
  cat >"$WORK/configs/$1.toml" <<TOML
extends = "$2"
[run]
name = "$1"
output_dir = "$WORK/runs"
device = "$DEVICE"
precision = "$PRECISION"
threads = $CORES
[data]
train = "$SPEC"
mode = "resampled"
tokenizer = "$TOKENIZER"
workers = $CORES
[optim]
batch_size = $3
micro_batch_size = $4
steps = $5
warmup_steps = 5
lr = 5e-4
weight_decay = 0.2
[checkpoint]
every = $7
keep = 2
[log]
every = $6
tensorboard = false
progress = "plain"
TOML
  echo "$WORK/configs/$1.toml"
}

# Installs the bundle's wheels (open_clip_torch, ftfy, wcwidth, webdataset, braceexpand) into the
# scratch folder when the host's Python lacks them.
# OC_CHECK finds the packages without importing them (open_clip takes seconds to import).
OC_CHECK=$(cat <<'PY'
import importlib.util as u, sys
missing = [m for m in ("open_clip", "webdataset", "ftfy", "wcwidth", "braceexpand", "tokenizers", "torchvision", "PIL")
           if u.find_spec(m) is None]
sys.exit("missing: " + " ".join(missing) if missing else 0)
PY
)
# shellcheck disable=SC2317 # run by `phase` through bash -c
deps() {
  if "$PY" -c "$OC_CHECK"; then
    echo "OpenCLIP's packages are installed on this host"
    return 0
  fi
  compgen -G "$ROOT/wheels/*.whl" >/dev/null || { echo "missing OpenCLIP packages and no wheels in $ROOT/wheels (scripts/gpu_bundle.sh)" >&2; return 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/pydeps" "$ROOT"/wheels/*.whl
  PYTHONPATH="$WORK/pydeps${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "$OC_CHECK"
  echo "installed the wheels of $ROOT/wheels into $WORK/pydeps:"
  ls "$ROOT/wheels"
}

# OpenCLIP's side (scripts/bench_train.py): the same preset, shards, tokenizer, precision, AdamW
# hyper-parameters and schedule, loader cores and measured steps; add --batch-size and --micro-batch.
OPENCLIP=("$PY" "$HERE/bench_train.py" "$SPEC" --tokenizer "$TOKENIZER" --model-toml "$PRESET_TOML"
  --device "$DEVICE" --precision "$PRECISION" --threads "$CORES" --workers "$CORES"
  --lr 5e-4 --weight-decay 0.2 --warmup-lr 5 --steps "$STEPS" --warmup "$WINDOW_FROM")

echo "[gpu_check] $MODE on $DEVICE_NAME ($CORES cores), torch $TORCH_VERSION, $BIN; budget ${BUDGET} s" >&2
export -f deps
export PY OC_CHECK ROOT WORK
phase env 60 "$BIN" env --json
phase deps 90 bash -c 'set -euo pipefail; deps'
if [[ -d "$WORK/pydeps" ]]; then export PYTHONPATH="$WORK/pydeps${PYTHONPATH:+:$PYTHONPATH}"; fi
phase synth 120 "$BIN" -q data synth --out "$DATA" --train "$SYNTH_N" --eval 0 --image-size 256 --shard-size "$SHARD"
phase tokenizer 60 "$BIN" -q tokenizer train --data "$SPEC" --vocab-size 1024 --out "$TOKENIZER"

cfg=$(write_config tiny "$TINY_TOML" "$TINY_BATCH" 0 20 5 10)
phase tiny_train 90 "$BIN" train --config "$cfg" --stop-at-step 10 "${SETS[@]}"
phase tiny_resume 90 "$BIN" train --config "$cfg" --resume auto "${SETS[@]}"
# SigLIP (attention-pooling head, bidirectional text) under autocast, with patch dropout and
# activation checkpointing (the C++ recompute function on the device's autograd threads).
cfg=$(write_config siglip "$SIGLIP_TOML" "$TINY_BATCH" 0 10 5 0)
phase siglip 90 "$BIN" train --config "$cfg" --set model.grad_checkpointing=true \
  --set model.vision.patch_dropout=0.5 "${SETS[@]}"
cfg=$(write_config nccl "$TINY_TOML" "$TINY_BATCH" 0 10 5 0)
phase nccl 90 "$BIN" launch --nproc-per-node 1 --master-port "$PORT" -- train --config "$cfg" "${SETS[@]}"

cfg=$(write_config "cliptrain_b$BATCH_S" "$PRESET_TOML" "$BATCH_S" 0 "$STEPS" "$LOG_EVERY" 0)
phase "cliptrain_b$BATCH_S" 120 "$BIN" train --config "$cfg" "${SETS[@]}"
phase "openclip_b$BATCH_S" 150 "${OPENCLIP[@]}" --batch-size "$BATCH_S" --micro-batch 0
cfg=$(write_config "cliptrain_b$BATCH_L" "$PRESET_TOML" "$BATCH_L" "$MICRO" "$STEPS" "$LOG_EVERY" 0)
phase "cliptrain_b$BATCH_L" 150 "$BIN" train --config "$cfg" "${SETS[@]}"
phase "openclip_b$BATCH_L" 180 "${OPENCLIP[@]}" --batch-size "$BATCH_L" --micro-batch "$MICRO"

set +e
"$PY" "$HERE/gpu_check_report.py" "$WORK" "$OUT" --exit-code
rc=$?
echo "[gpu_check] $((SECONDS - START)) s; wrote $OUT/gpu_check.json, $OUT/gpu_check.md, $OUT/gpu_check_logs.tar.gz" >&2
exit "$rc"
