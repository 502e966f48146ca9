#!/usr/bin/env bash
# Set up ./.venv with accel and what its tests need. Idempotent: a second run only checks.
#  - CPU machines (no nvidia-smi) get the CPU build of torch 2.13.0; on this project's development and
#    CI machines it is on local disk (pip's find-links), so no CUDA torch is ever downloaded there.
#  - GPU machines get torch from the default index.
#  - Every other package is pinned by constraints.txt (the versions the test-suite last passed with).
#  - with --browser (the test command), also Debian's chromium for the demo's browser test, when it is
#    missing and this runs as root with apt-get (never a downloaded browser); if that cannot be done the
#    browser test skips and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "could not install chromium: the browser test will be skipped"
  else
    echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will be skipped"
  fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch>=2.5"
  else
    .venv/bin/pip install -q "torch==2.13.0"
  fi
fi
.venv/bin/pip install -q -c constraints.txt -e ".[dev,eval,demo]"
.venv/bin/python -c "import torch, accel; print(f'accel {accel.__version__} ready: torch {torch.__version__}')"
