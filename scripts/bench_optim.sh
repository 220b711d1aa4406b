#!/usr/bin/env bash
# One AdamW step over CLIP ViT-B/32's parameters on the CPU: cliptrain's fused and per-tensor
# kernels (`cliptrain bench optim`) next to torch.optim.AdamW(fused=True) and (foreach=True)
# over the very same tensor shapes and decay groups, with random gradients. Prints ms/step of
# each (mean wall and process CPU time over the timed steps, after 2 warm-up steps) and the
# load average.
#   scripts/bench_optim.sh [THREADS]   (default 2; BENCH_STEPS steps, default 10)
# CLIPTRAIN_BIN=/path/to/cliptrain measures that binary instead of building this tree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="${1:-2}"
STEPS="${BENCH_STEPS:-10}"
MODEL="${BENCH_MODEL:-configs/models/vit-b-32.toml}"

scripts/bootstrap.sh --ref
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
rust=$("$BIN" -q bench optim --model "$MODEL" --threads "$THREADS" --steps "$STEPS" \
  --shapes-out "$WORK/shapes.json" --json)
py=$(python scripts/bench_optim.py "$WORK/shapes.json" --threads "$THREADS" --steps "$STEPS")
python - "$rust" "$py" "$MODEL" <<'PY'
import json, sys
rust, py, model = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
rows = [("cliptrain fused", rust, "fused"), ("cliptrain per-tensor", rust, "per_tensor"),
        ("torch AdamW(fused=True)", py, "fused"), ("torch AdamW(foreach=True)", py, "foreach")]
print(f"{'':28} {'ms/step':>9} {'CPU ms/step':>12}")
for name, d, k in rows:
    print(f"{name:28} {d[k + '_ms']:9.1f} {d[k + '_cpu_ms']:12.1f}")
print(f"per-tensor / fused: {rust['per_tensor_ms'] / rust['fused_ms']:.2f}x; "
      f"cliptrain fused / torch fused: {rust['fused_ms'] / py['fused_ms']:.2f}x")
print(f"({model}: {rust['tensors']} tensors, {rust['numel'] / 1e6:.1f} M parameters; "
      f"{rust['threads']} threads, {rust['steps']} steps; torch {py['torch']})")
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
