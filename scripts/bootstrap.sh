#!/usr/bin/env bash
# Create (once) the Python venv that provides libtorch 2.11.0 for the build, and optionally the
# pinned reference packages the tests compare against. Idempotent: a stamp file per step makes a
# second call instant, and a lock keeps concurrent calls from installing twice.
#
#   scripts/bootstrap.sh          torch==2.11.0 only (what `cargo build` needs)
#   scripts/bootstrap.sh --ref    also scripts/requirements-ref.txt (transformers, open_clip, ...)
#
# The venv lives outside the clone so every clone and CI run reuses it:
#   ${CLIPTRAIN_VENV:-$HOME/.cache/cliptrain/venv-torch-2.11.0}
# Set PYTHON to choose the interpreter that creates it (default: python3, 3.10+).
set -euo pipefail

TORCH_VERSION=2.11.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLIPTRAIN_VENV:-$HOME/.cache/cliptrain/venv-torch-$TORCH_VERSION}"
PYTHON="${PYTHON:-python3}"
WANT_REF=0
for arg in "$@"; do
  case "$arg" in
    --ref) WANT_REF=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "bootstrap.sh: unknown argument '$arg' (expected --ref)" >&2; exit 2 ;;
  esac
done

TORCH_STAMP="$VENV/.cliptrain-torch-$TORCH_VERSION.stamp"
REF_HASH="$(sha256sum "$ROOT/scripts/requirements-ref.txt" | cut -c1-16)"
REF_STAMP="$VENV/.cliptrain-ref-$REF_HASH.stamp"
# NCCL's process-group header needs two CUDA header sets torch's wheels do not install
# (crt/host_config.h, <nv/target>); the wheels matching torch's CUDA 13.0 provide them.
CUDA_HEADERS=("nvidia-cuda-crt==13.0.88.*" "nvidia-cuda-cccl==13.0.85.*")
CUDA_STAMP="$VENV/.cliptrain-cuda-headers-13.0.stamp"

done_already() {
  [[ -f "$TORCH_STAMP" && -f "$CUDA_STAMP" ]] && { [[ $WANT_REF == 0 ]] || [[ -f "$REF_STAMP" ]]; }
}
if done_already; then exit 0; fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if done_already; then exit 0; fi   # another process finished while we waited

if [[ ! -f "$TORCH_STAMP" ]]; then
  if ! command -v "$PYTHON" >/dev/null; then
    echo "bootstrap.sh: '$PYTHON' not found; install Python 3.10+ or set PYTHON=/path/to/python3" >&2
    exit 1
  fi
  echo "bootstrap: creating $VENV with torch==$TORCH_VERSION (about 5 GB, a few minutes, once)" >&2
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
  got="$("$VENV/bin/python" -W ignore -c 'import torch; print(torch.__version__.split("+")[0])')"
  if [[ "$got" != "$TORCH_VERSION" ]]; then
    echo "bootstrap.sh: venv has torch $got, expected $TORCH_VERSION; remove $VENV and rerun" >&2
    exit 1
  fi
  touch "$TORCH_STAMP"
fi

if [[ ! -f "$CUDA_STAMP" ]]; then
  echo "bootstrap: fetching CUDA headers for the NCCL process group into $VENV/cuda-extra" >&2
  tmp="$(mktemp -d)"
  "$VENV/bin/python" -m pip download --quiet --no-deps -d "$tmp" "${CUDA_HEADERS[@]}"
  rm -rf "$VENV/cuda-extra"
  for wheel in "$tmp"/*.whl; do
    "$VENV/bin/python" -m zipfile -e "$wheel" "$VENV/cuda-extra"
  done
  rm -rf "$tmp"
  touch "$CUDA_STAMP"
fi

if [[ $WANT_REF == 1 && ! -f "$REF_STAMP" ]]; then
  echo "bootstrap: installing reference packages (scripts/requirements-ref.txt) into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/scripts/requirements-ref.txt"
  rm -f "$VENV"/.cliptrain-ref-*.stamp
  touch "$REF_STAMP"
fi
