# Source this (after scripts/bootstrap.sh) to use plain cargo:  source scripts/env.sh
# It puts the torch venv's python first on PATH and tells torch-sys to take libtorch from it.
# A LIBTORCH you exported yourself (your own libtorch 2.11 install) is left alone and wins.
CLIPTRAIN_VENV="${CLIPTRAIN_VENV:-$HOME/.cache/cliptrain/venv-torch-2.11.0}"
export CLIPTRAIN_VENV
if [[ ! -x "$CLIPTRAIN_VENV/bin/python" ]]; then
  echo "scripts/env.sh: no venv at $CLIPTRAIN_VENV; run scripts/bootstrap.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
case ":$PATH:" in
  *":$CLIPTRAIN_VENV/bin:"*) ;;
  *) export PATH="$CLIPTRAIN_VENV/bin:$PATH" ;;
esac
if [[ -z "${LIBTORCH:-}" ]]; then
  export LIBTORCH_USE_PYTORCH=1
fi
# The NCCL process group is built whenever bootstrap.sh fetched the CUDA headers it needs
# (CLIPTRAIN_NCCL=0 turns it off).
if [[ -d "$CLIPTRAIN_VENV/cuda-extra/nvidia/cu13/include" ]]; then
  export CUDA_EXTRA_INCLUDE="${CUDA_EXTRA_INCLUDE:-$CLIPTRAIN_VENV/cuda-extra/nvidia/cu13/include}"
  export CLIPTRAIN_NCCL="${CLIPTRAIN_NCCL:-1}"
fi
