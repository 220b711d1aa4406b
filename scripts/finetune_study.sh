#!/usr/bin/env bash
# The fine-tuning study of docs/finetuning.md ("Worked example: what each way of fine-tuning
# keeps"), run for real on generated data: the demo's CLIP (trained on shapes) fine-tuned to the
# symbols domain it never saw, five ways, each scored zero-shot on the new task (symbols) and on
# the original one (shapes), plus the WiSE-FT curve between the demo and the full fine-tune.
# Writes docs/images/finetune-study.png and prints the table (also in $OUT/study.md).
#   scripts/finetune_study.sh [OUT]   (default runs/study; the demo checkpoint comes from
#                                      scripts/demo.sh, run first when checkpoints/demo is missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-runs/study}"

scripts/bootstrap.sh --ref
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked --quiet
BIN=$PWD/target/release/cliptrain
[[ -f checkpoints/demo/latest/model.safetensors || -L checkpoints/demo/latest ]] || scripts/demo.sh
SYM=data/symbols
if [[ ! -f $SYM/shards/stats.json ]]; then
  "$BIN" -q data synth --domain symbols --layout folder --out "$SYM"
  "$BIN" -q data build --images "$SYM/images" --captions "$SYM/captions.csv" --out "$SYM/shards"
fi
# Labelled symbol images for FLYP (another seed: none of them is an evaluation image).
LAB=data/symbols-labelled
[[ -f $LAB/stats.json ]] || "$BIN" -q data synth --domain symbols --seed 1 --train 16 --eval 4000 --shard-size 2000 --out "$LAB"
mkdir -p "$OUT"

run() { # NAME EXTRA-TOML
  [[ -f $OUT/$1/latest/model.safetensors ]] && return
  cat > "$OUT/$1.toml" <<TOML
extends = "$PWD/configs/finetune-example.toml"
[run]
name = "$1"
output_dir = "$PWD/$OUT"
[eval]
every = 0
$2
TOML
  "$BIN" -q train --config "$OUT/$1.toml"
}
run full '[optim]
ema_decay = 0.99
ema_warmup = true'
run lora '[optim]
lr = 5e-3
[finetune]
logit_scale = "freeze"
[finetune.lora]
rank = 8
alpha = 16.0
targets = ["q_proj", "v_proj", "fc1", "fc2"]'
flyp='[data]
train = "'"$PWD/$LAB"'/eval-{000000..000001}.tar"
classnames = "'"$PWD/$LAB"'/classnames.txt"
templates = "'"$PWD/$LAB"'/templates.txt"'
run flyp "$flyp"
run flyp-mask "$flyp
[loss]
mask_same_class = true"

"$BIN" -q merge --checkpoint checkpoints/demo --checkpoint "$OUT/full" \
  --alpha 0,0.25,0.5,0.75,1 --out "$OUT/wise" --force

score() { # NAME MODEL [--ema]
  local name=$1 model=$2; shift 2
  "$BIN" -q eval zeroshot --checkpoint "$model" "$@" --data "$SYM/eval" \
    --classnames "$SYM/classnames.txt" --templates "$SYM/templates.txt" --json "$OUT/$name.new.json" >/dev/null
  "$BIN" -q eval zeroshot --checkpoint "$model" "$@" --data data/synth/eval-000000.tar \
    --classnames data/synth/classnames.txt --templates data/synth/templates.txt --json "$OUT/$name.orig.json" >/dev/null
}
score before checkpoints/demo
score full "$OUT/full"
score ema "$OUT/full" --ema
score lora "$OUT/lora"
score flyp "$OUT/flyp"
score flyp-mask "$OUT/flyp-mask"
for a in 0 0.25 0.5 0.75 1; do score "wise-$a" "$OUT/wise/alpha-$a"; done

python - "$OUT" docs/images/finetune-study.png <<'PY'
import json, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

out, png = Path(sys.argv[1]), sys.argv[2]
top1 = lambda name, task: 100 * json.loads((out / f"{name}.{task}.json").read_text())["top1"]
rows = [("zero-shot (the demo, before)", "before"), ("full fine-tuning", "full"),
        ("full fine-tuning, EMA (0.99)", "ema"), ("LoRA (rank 8, q/v/fc1/fc2)", "lora"),
        ("FLYP on labelled images", "flyp"), ("FLYP, same-class pairs masked", "flyp-mask")]
alphas = ["0", "0.25", "0.5", "0.75", "1"]
lines = ["| model | symbols (new task) | shapes (original task) |", "|---|---:|---:|"]
for label, name in rows:
    lines.append(f"| {label} | {top1(name, 'new'):.1f} % | {top1(name, 'orig'):.1f} % |")
for a in alphas:
    lines.append(f"| WiSE-FT α = {a} | {top1('wise-' + a, 'new'):.1f} % | {top1('wise-' + a, 'orig'):.1f} % |")
table = "\n".join(lines)
(out / "study.md").write_text(table + "\n")
print(table)

fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=120)
xs = [float(a) for a in alphas]
ax.plot(xs, [top1("wise-" + a, "new") for a in alphas], "o-", color="tab:blue", label="WiSE-FT: symbols (new)")
ax.plot(xs, [top1("wise-" + a, "orig") for a in alphas], "o-", color="tab:orange", label="WiSE-FT: shapes (original)")
# The other fine-tunes beside the curve, one column each, both tasks.
marks = [("ema", "EMA"), ("lora", "LoRA"), ("flyp", "FLYP"), ("flyp-mask", "FLYP\nmasked")]
side = [1.2 + 0.15 * i for i in range(len(marks))]
for x, (name, _) in zip(side, marks):
    ax.scatter([x], [top1(name, "new")], marker="s", color="tab:blue", zorder=3)
    ax.scatter([x], [top1(name, "orig")], marker="s", color="tab:orange", zorder=3)
ax.axvline(1.1, color="grey", lw=0.6)
ax.set_xticks(xs + side, [a for a in alphas] + [label for _, label in marks], fontsize=8)
ax.set_xlabel("WiSE-FT α (0 = the demo's weights, 1 = fully fine-tuned) | other fine-tunes")
ax.set_ylabel("zero-shot top-1 (%)")
ax.set_xlim(-0.05, 1.72)
ax.set_ylim(0, 100)
ax.grid(alpha=0.3)
ax.legend(loc="lower left", fontsize=8)
ax.set_title("Fine-tuning the demo CLIP from shapes to symbols", fontsize=10)
fig.tight_layout()
fig.savefig(png)
print(f"wrote {png}")
PY
