#!/usr/bin/env bash
# Set up ./.venv with accel and what its tests need. Idempotent: a second run only checks.
#  - torch 2.13.0 first, the build that fits the machine:
#      * an NVIDIA GPU (nvidia-smi lists one): the default build from the package index (CUDA);
#      * Linux without one: the CPU build, torch==2.13.0+cpu, so the multi-GB CUDA build is never pulled.
#        pip looks for it where it is configured to look (a local mirror or find-links folder, as on this
#        project's development and CI machines: `pip config list`) and, when it answers within a few
#        seconds, in PyTorch's CPU wheel index (https://download.pytorch.org/whl/cpu), added as an
#        *extra* index (pip's configured indexes stay). Set ACCEL_TORCH_SPEC to install another torch
#        requirement instead (e.g. ACCEL_TORCH_SPEC="torch==2.13.0" for the index's default build).
#      * macOS and other systems: torch==2.13.0 from the package index (CPU builds there).
#  - then accel (editable) with its extras dev, eval and demo; every package pinned by constraints.txt
#    (the versions the test suite last passed with; triton as torch 2.13.0's CUDA wheel requires it).
#  - with --browser (the test command), also Debian's chromium for the demo's browser test, when it is
#    missing and this runs as root with apt-get (never a downloaded browser); if that cannot be done the
#    browser test skips and says why.
# pip runs quietly (errors still print); each step says what it does and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
START=$SECONDS

step() { echo "setup: $*"; }
took() { echo "setup:   done in $((SECONDS - $1)) s"; }

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  t=$SECONDS
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing Debian's chromium for the browser test (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "could not install chromium: the browser test will be skipped"
    took $t
  else
    echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will be skipped"
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  t=$SECONDS
  step "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
  took $t
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
pip_install() {  # quiet pip; drops the one warning a local mirror repeats for every package it lacks
  "${PIP[@]}" "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true; }
}

reachable() {  # the URL answers within 5 s (no answer at all on machines that reach only a local mirror)
  .venv/bin/python - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5).close()
EOF
}

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  t=$SECONDS
  extra=()
  if [ -n "${ACCEL_TORCH_SPEC:-}" ]; then
    spec=$ACCEL_TORCH_SPEC
    step "installing $spec (ACCEL_TORCH_SPEC)"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec="torch==$TORCH_VERSION"
    step "installing $spec, the CUDA build (an NVIDIA GPU is present); a few GB"
  elif [ "$(uname -s)" = Linux ]; then
    spec="torch==$TORCH_VERSION+cpu"
    if reachable "$CPU_INDEX/torch/"; then
      extra=(--extra-index-url "$CPU_INDEX")
      step "installing $spec, the CPU build (no NVIDIA GPU), from pip's configured sources and $CPU_INDEX"
    else
      step "installing $spec, the CPU build (no NVIDIA GPU), from pip's configured sources ($CPU_INDEX does not answer)"
    fi
  else
    spec="torch==$TORCH_VERSION"
    step "installing $spec ($(uname -s): the package index's build)"
  fi
  if ! pip_install ${extra[@]+"${extra[@]}"} "$spec"; then
    echo "setup: could not install $spec. Without an NVIDIA GPU the CPU build comes from $CPU_INDEX or a" >&2
    echo "setup: local mirror that pip is configured to use; or set ACCEL_TORCH_SPEC (e.g. \"torch==$TORCH_VERSION\")." >&2
    exit 1
  fi
  took $t
fi

t=$SECONDS
step "installing accel (editable) with its dev, eval and demo extras, pinned by constraints.txt"
pip_install -c constraints.txt -e ".[dev,eval,demo]"
took $t
.venv/bin/python -c "import torch, accel; print(f'accel {accel.__version__} ready: torch {torch.__version__}')"
echo "setup: finished in $((SECONDS - START)) s"
