#!/usr/bin/env bash
# One-shot GPU embedding benchmark (issue #25): benchmarks/gpu_embed.py on a GPU machine
# that has PyTorch but neither network nor this project's other packages.
#
#   1. here, where pip reaches an index:   benchmarks/gpu_embed.sh --prepare
#      (the wheels open_clip needs beyond what the GPU image holds, into .whl/, which
#      git ignores);
#   2. on the GPU machine, with .whl carried: benchmarks/gpu_embed.sh [gpu_embed.py args]
#      installs those wheels and the project into a scratch folder (no network, nothing
#      else), then runs for at most 5 minutes and prints the figures, JSON last.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
PY=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
    PIP=${PREPARE_PYTHON:-.venv/bin/python}
    mkdir -p "$WHEELS"
    "$PIP" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$WHEELS" open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5
    ls -l "$WHEELS"
    exit 0
fi

SITE=${TMPDIR:-/tmp}/lakecurate-gpu-site
rm -rf "$SITE"
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
fi
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" .
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
exec timeout 300 "$PY" benchmarks/gpu_embed.py "$@"
