#!/usr/bin/env bash
# Fill gpu-wheels/ (ignored by git) with the wheels the GPU run needs and the GPU machine lacks.
#
#   bash benchmarks/gpu_wheels.sh            # needs PyPI (run it here, not on the GPU machine)
#
# The GPU machine (device tool, kind nvidia-h200: Python 3.12, torch, Triton, no network) has every
# runtime dependency of diffusers (huggingface-hub >= 1.32, safetensors >= 0.8, numpy, regex, requests,
# filelock, Pillow; see /work/.library/device/KINDS.md) but not diffusers itself, which is a pure-Python
# wheel. The run needs neither transformers nor peft nor accelerate (accel.eval.model_specs.import_diffusers
# hides them). So the folder holds one wheel: diffusers at the version constraints.txt pins (the one the
# tests run with). benchmarks/gpu_run.sh installs it with
#   pip install --no-index --no-deps --target /tmp/accel-gpu-site gpu-wheels/*.whl
# and the `run` call carries the folder: carry=["gpu-wheels"] (see benchmarks/README.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DEST=${1:-gpu-wheels}
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
VERSION=$(sed -n 's/^diffusers==//Ip' constraints.txt)
if [ -z "$VERSION" ]; then
  echo "gpu_wheels.sh: constraints.txt pins no diffusers version" >&2
  exit 1
fi
rm -rf "$DEST"
mkdir -p "$DEST"
# pure-Python wheel only (py3-none-any), for the GPU machine's Python 3.12
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  -d "$DEST" "diffusers==$VERSION"
for f in "$DEST"/*.whl; do
  case "$f" in
    *-none-any.whl) ;;
    *) echo "gpu_wheels.sh: $f is not a pure-Python wheel" >&2; exit 1 ;;
  esac
done
du -ch "$DEST"/*.whl
echo "ok: carry [\"$DEST\"] in the device run call (see benchmarks/README.md)"
