#!/usr/bin/env bash
# Assembles what a GPU host needs for scripts/gpu_check.sh into one folder (default gpu_bundle/,
# git-ignored): the release binary, configs/, scripts/, REVISION, and wheels/ with the OpenCLIP
# side's pure-Python packages that the GPU image lacks (open_clip_torch, ftfy, webdataset at the
# versions of scripts/requirements-ref.txt; wcwidth and braceexpand at the venv's versions).
# About 25 MiB, nearly all of it the binary. On the GPU host:
#   bash gpu_bundle/scripts/gpu_check.sh OUT
#
#   scripts/gpu_bundle.sh [DIR]
# CLIPTRAIN_BIN=/path/to/cliptrain bundles that binary instead of
# ${CARGO_TARGET_DIR:-target}/release/cliptrain (which must exist: cargo build --release --locked).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR=${1:-gpu_bundle}
BIN=${CLIPTRAIN_BIN:-${CARGO_TARGET_DIR:-target}/release/cliptrain}
[[ -x "$BIN" ]] || { echo "gpu_bundle: no binary at $BIN; build it first: cargo build --release --locked" >&2; exit 1; }
# shellcheck source=scripts/env.sh
source scripts/env.sh

pinned() { sed -n "s/^$1==\([^ ]*\).*/\1/p" scripts/requirements-ref.txt; }
installed() { python -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"; }
wheels=(
  "open-clip-torch==$(pinned open-clip-torch)"
  "ftfy==$(pinned ftfy)"
  "webdataset==$(pinned webdataset)"
  "wcwidth==$(installed wcwidth)"
  "braceexpand==$(installed braceexpand)"
)

rm -rf "$DIR"
mkdir -p "$DIR/wheels"
cp "$BIN" "$DIR/cliptrain"
cp -r configs scripts "$DIR/"
find "$DIR/scripts" -name __pycache__ -prune -exec rm -rf {} +
git rev-parse --short HEAD >"$DIR/REVISION" 2>/dev/null || echo unknown >"$DIR/REVISION"
# Pure-Python wheels (wcwidth's is abi3): any CPython 3 on x86-64 takes them (the GPU image's
# python3 is 3.12).
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform any -d "$DIR/wheels" "${wheels[@]}"
got=("$DIR"/wheels/*.whl)
echo "$DIR: $(du -sh "$DIR" | cut -f1), ${#got[@]} wheels: ${got[*]##*/}"
