#!/usr/bin/env bash
# One prepared GPU run (about 8 minutes at most): the CUDA kernel tests, then the CUDA kernel benchmark.
# Needs only torch + triton on the machine (no diffusers, no network): accel is used from the source
# tree; pytest is part of the GPU machine's image (/work/.library/device/KINDS.md).
# Usage: OUT=some/dir bash benchmarks/gpu_check.sh   (results: $OUT/gpu_tests.txt, $OUT/kernels_gpu.json)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu_info.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu_info.txt"
$PY -c "import pytest" 2>/dev/null || echo "gpu_check.sh: pytest is missing on this machine; the kernel tests cannot run"
timeout 180 $PY -m pytest -q -p no:cacheprovider tests/kernels/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
timeout 420 $PY benchmarks/kernels.py --device cuda --out "$OUT/kernels_gpu.json" 2>&1 | tee "$OUT/kernels_gpu.log"
