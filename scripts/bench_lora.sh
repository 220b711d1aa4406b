#!/usr/bin/env bash
# Full fine-tuning vs LoRA at ViT-B/32 on the CPU, batch 32 (issue 23): trainable parameters,
# optimizer state, seconds per step and peak resident memory, for cliptrain and for the PyTorch
# reference (transformers' CLIPModel, with PEFT for LoRA: scripts/bench_lora.py) side by side.
# LoRA: rank 8, alpha 16, q_proj + v_proj of every block of both towers, everything else frozen.
#   scripts/bench_lora.sh [THREADS]   (default 2; BENCH_STEPS, default 6, the first 2 untimed)
# cliptrain reads the synthetic shards (decoded and resized to 224 px by its loader); the
# reference feeds one random batch, so it spends nothing on data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="${1:-2}"
STEPS="${BENCH_STEPS:-6}"

scripts/bootstrap.sh --ref
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked --quiet
BIN=$PWD/target/release/cliptrain
DATA=data/synth
[[ -f $DATA/stats.json ]] || "$BIN" -q data synth --out "$DATA" >/dev/null
[[ -f $DATA/tokenizer.json ]] || "$BIN" -q tokenizer train --data "$DATA/train-{000000..000007}.tar" --vocab-size 1024 --out "$DATA/tokenizer.json"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
config() { # NAME EXTRA-TOML
  cat > "$WORK/$1.toml" <<TOML
extends = "$PWD/configs/models/vit-b-32.toml"
[run]
name = "$1"
output_dir = "$WORK"
device = "cpu"
threads = $THREADS
[data]
train = "$PWD/$DATA/train-{000000..000007}.tar"
tokenizer = "$PWD/$DATA/tokenizer.json"
workers = 1
[optim]
batch_size = 32
steps = $STEPS
warmup_steps = 1
lr = 1e-4
[checkpoint]
every = 0
[log]
every = 1
tensorboard = false
progress = "plain"
$2
TOML
}
config full ""
config lora '[finetune]
logit_scale = "freeze"
[finetune.lora]
rank = 8
alpha = 16.0
targets = ["q_proj", "v_proj"]'

peak() { python -c 'import resource,subprocess,sys; subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL); print(round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024))' "$@"; }

printf '%-16s %14s %18s %10s %16s\n' "" "trainable" "optimizer (MiB)" "s/step" "peak RSS (MiB)"
for mode in full lora; do
  rss=$(peak "$BIN" train --config "$WORK/$mode.toml")
  python - "$WORK/$mode" "$rss" "$mode" <<'PY'
import json, sys
from pathlib import Path
from safetensors import safe_open
run, rss, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(run / "metrics.jsonl") if l.strip()]
rows = [r for r in rows if r["kind"] == "train" and r["step"] > 2]
step_s = sum(32 / r["samples_per_s"] for r in rows) / len(rows)
ckpt = run / "latest"
state = trainable = 0
# Moments exist only for what trains: exp_avg's element count is the trainable parameter count.
with safe_open(str(ckpt / "optimizer.safetensors"), "pt") as f:
    for k in f.keys():
        t = f.get_tensor(k)
        if k.startswith(("exp_avg.", "exp_avg_sq.")):
            state += t.numel() * t.element_size()
        if k.startswith("exp_avg."):
            trainable += t.numel()
print(f"{'cliptrain ' + mode:<16} {trainable:>14,} {state / 2**20:>18.1f} {step_s:>10.2f} {rss:>16}")
PY
  ref=$(python scripts/bench_lora.py --mode "$mode" --steps "$STEPS" --threads "$THREADS" 2>/dev/null)
  python - "$ref" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
name = "torch " + r["mode"]
print(f"{name:<16} {r['trainable']:>14,} {r['optimizer_state_bytes'] / 2**20:>18.1f} {r['step_s']:>10.2f} {round(r['peak_rss_mib']):>16}")
PY
done
echo "(ViT-B/32, CPU fp32, batch 32, $THREADS threads, steps 3-$STEPS; torch = transformers CLIPModel + peft for LoRA)"
