#!/usr/bin/env bash
# The whole GPU loan in one command: install the carried wheels, run the kernel check, then the
# transformer speed run, and write everything to $OUT (at most 8 files, what the device tool returns).
#
#   bash benchmarks/gpu_run.sh [--budget-s S] [--skip-kernel-check] [--tiny] [gpu_models.py options]
#
# On the GPU machine (device tool `run`, see benchmarks/README.md for the exact call):
#   1. pip installs gpu-wheels/*.whl (filled beforehand by `bash benchmarks/gpu_wheels.sh`, carried
#      with carry=["gpu-wheels"]) into /tmp/accel-gpu-site, no index, no dependencies;
#   2. the kernel check, `benchmarks/gpu_check.py --out $OUT/kernel_check` (kernel correctness, then
#      kernel figures; exits non-zero on a correctness failure; a missing script fails the run),
#      at most KERNEL_S (200) seconds: it checks correctness first, then records
#      kernel figures until its budget, so the models keep about 300 s of the 540;
#   3. `python3 benchmarks/gpu_models.py` with the time that is left (at most MODELS_S, 360, seconds),
#      Triton tuning limited to MODELS_TUNE_BUDGET_S (8) seconds per new key;
#   4. $OUT/summary.txt: what ran, with what result, and the table of figures; printed last.
# Both share the tuning cache $OUT/triton_tuning.json (ACCEL_TUNING_CACHE), which comes back too.
# The whole run stays inside --budget-s (default 540 s, under the tool's 600 s per command).
# Other options are passed to gpu_models.py (e.g. --models wan1.3b_480p --methods Radial).
# --tiny: the CPU mode used by the tests (toy models; the kernel check's own --tiny mode).
# Exit status: 0 when the kernel check passed (or was not run) and every model measurement was made.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
PY=${PY:-python3}
OUT=${OUT:-$ROOT/bench-results/gpu-run}
WHEELS=${GPU_WHEELS:-$ROOT/gpu-wheels}
CHECK_PY=${GPU_CHECK_PY:-benchmarks/gpu_check.py}   # the kernel check (replaceable for tests)
SITE=${GPU_SITE:-${TMPDIR:-/tmp}/accel-gpu-site}
BUDGET_S=540
KERNEL_S=${KERNEL_S:-200}
MODELS_S=${MODELS_S:-360}
TINY=0
KERNEL=1
MODEL_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --budget-s) BUDGET_S=$2; shift ;;
    --skip-kernel-check) KERNEL=0 ;;
    --tiny) TINY=1; MODEL_ARGS+=(--tiny) ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) MODEL_ARGS+=("$1") ;;
  esac
  shift
done
case "$BUDGET_S" in ''|*[!0-9]*) echo "gpu_run.sh: --budget-s must be a whole number of seconds, got '$BUDGET_S'" >&2; exit 1 ;; esac
mkdir -p "$OUT"
LOG="$OUT/run.log"
SUMMARY="$OUT/summary.txt"
: > "$LOG"
START=$SECONDS
say() { echo "$*" | tee -a "$LOG"; }
left() { echo $((BUDGET_S - (SECONDS - START))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

{
  echo "accel GPU run, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
  else
    echo "gpu: none (nvidia-smi not found)"
  fi
  echo "python: $($PY -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1)"
  echo "triton: $($PY -c 'import triton; print(triton.__version__)' 2>&1 | tail -1)"
} > "$SUMMARY"
cat "$SUMMARY" | tee -a "$LOG"

# the Triton kernel's tuning cache: shared by the kernel check and the models, seeded from the last
# loan's (benchmarks/results/triton_tuning_h200.json, when committed), and brought back in $OUT
export ACCEL_TUNING_CACHE=${ACCEL_TUNING_CACHE:-$OUT/triton_tuning.json}
SEED=benchmarks/results/triton_tuning_h200.json
if [ -f "$SEED" ] && [ ! -f "$ACCEL_TUNING_CACHE" ]; then cp "$SEED" "$ACCEL_TUNING_CACHE"; fi
echo "tuning cache: $ACCEL_TUNING_CACHE$([ -f "$SEED" ] && echo " (seeded from $SEED)"); kernel env: $(env | grep '^ACCEL_TRITON' | tr '\n' ' ')" \
  | tee -a "$SUMMARY" "$LOG"

# 1. the carried wheels
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  if $PY -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHEELS"/*.whl >>"$LOG" 2>&1; then
    export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#"$ROOT"}"
    echo "wheels: installed $(cd "$WHEELS" && ls -- *.whl | tr '\n' ' ')into $SITE" | tee -a "$SUMMARY" "$LOG"
  else
    echo "wheels: INSTALL FAILED (see run.log)" | tee -a "$SUMMARY" "$LOG"
  fi
else
  echo "wheels: none in $WHEELS (run 'bash benchmarks/gpu_wheels.sh' and carry gpu-wheels); using the machine's packages" \
    | tee -a "$SUMMARY" "$LOG"
fi
echo "diffusers: $($PY -c 'from accel.eval.model_specs import import_diffusers; import_diffusers(); import diffusers; print(diffusers.__version__, diffusers.__file__)' 2>&1 | tail -1)" \
  | tee -a "$SUMMARY" "$LOG"

# 2. the kernel check (the kernel helper's script, benchmarks/gpu_check.py)
KERNEL_RC=0
if [ "$KERNEL" = 1 ] && [ ! -f "$CHECK_PY" ] && [ "$TINY" = 1 ]; then
  echo "kernel check: not run (--tiny, and this checkout has no benchmarks/gpu_check.py)" | tee -a "$SUMMARY" "$LOG"
elif [ "$KERNEL" = 1 ]; then
  KT=$(min "$KERNEL_S" $(($(left) - 90)))
  if [ "$KT" -lt 30 ]; then
    echo "kernel check: SKIPPED (only $(left) s of the budget left)" | tee -a "$SUMMARY" "$LOG"
    KERNEL_RC=1
  else
    T0=$SECONDS
    if [ -f "$CHECK_PY" ]; then
      TINY_ARG=()
      [ "$TINY" = 1 ] && TINY_ARG=(--tiny)
      say "== kernel check: $CHECK_PY --budget-s $((KT - 20)) ${TINY_ARG[*]} (at most ${KT} s)"
      PYTHONUNBUFFERED=1 timeout -k 10 "$KT" $PY "$CHECK_PY" --out "$OUT/kernel_check" \
        --budget-s $((KT - 20)) "${TINY_ARG[@]}" 2>&1 | tee -a "$LOG"
      KERNEL_RC=${PIPESTATUS[0]}
      STATUS=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1])).get("status"))' \
        "$OUT/kernel_check/gpu_check.json" 2>/dev/null || echo "no gpu_check.json")
    else
      say "== kernel check: $CHECK_PY is missing"
      KERNEL_RC=2
      STATUS="no $CHECK_PY in this checkout"
    fi
    case "$KERNEL_RC" in
      0) RESULT="passed" ;;
      124|137) RESULT="TIMED OUT after ${KT} s" ;;
      *) RESULT="FAILED (exit $KERNEL_RC): the model figures below are not publishable" ;;
    esac
    echo "kernel check: $RESULT, status: $STATUS ($((SECONDS - T0)) s; files in kernel_check/)" | tee -a "$SUMMARY" "$LOG"
  fi
else
  echo "kernel check: not run (--skip-kernel-check)" | tee -a "$SUMMARY" "$LOG"
fi

# 3. the transformer speed run, in the time that is left
MB=$(min "$MODELS_S" $(($(left) - 30)))
MODELS_RC=0
if [ "$MB" -lt 20 ]; then
  echo "models: SKIPPED (${MB} s available: $(left) s of the budget left, at most MODELS_S=${MODELS_S})" \
    | tee -a "$SUMMARY" "$LOG"
  MODELS_RC=1
else
  say "== models: benchmarks/gpu_models.py --budget-s $MB ${MODEL_ARGS[*]}"
  T0=$SECONDS
  # a layout class the kernel check did not tune gets at most MODELS_TUNE_BUDGET_S of tuning per key
  PYTHONUNBUFFERED=1 ACCEL_TRITON_TUNE_BUDGET_S=${ACCEL_TRITON_TUNE_BUDGET_S:-${MODELS_TUNE_BUDGET_S:-8}} \
    timeout -k 10 $((MB + 25)) $PY benchmarks/gpu_models.py --budget-s "$MB" \
    --out "$OUT/models.jsonl" "${MODEL_ARGS[@]}" 2>&1 | tee -a "$LOG"
  MODELS_RC=${PIPESTATUS[0]}
  case "$MODELS_RC" in
    0) RESULT="complete" ;;
    2) RESULT="INCOMPLETE (something failed or was skipped, see the table)" ;;
    124|137) RESULT="KILLED at the hard limit of $((MB + 25)) s" ;;
    *) RESULT="FAILED (exit $MODELS_RC, see run.log)" ;;
  esac
  echo "models: $RESULT ($((SECONDS - T0)) s)" | tee -a "$SUMMARY" "$LOG"
  if [ -s "$OUT/models.jsonl" ]; then
    $PY benchmarks/gpu_models.py --summarize "$OUT/models.jsonl" >> "$SUMMARY" 2>&1
  fi
fi

# 4. at most 8 files come back: pack the kernel check's files if there are more
if [ "$(find "$OUT" -type f | wc -l)" -gt 8 ] && [ -d "$OUT/kernel_check" ]; then
  tar -czf "$OUT/kernel_check.tar.gz" -C "$OUT" kernel_check && rm -rf "$OUT/kernel_check"
fi
echo "total: $((SECONDS - START)) s of a ${BUDGET_S} s budget; files in $OUT: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')" \
  >> "$SUMMARY"
echo "==================== summary ($SUMMARY)"
cat "$SUMMARY"
[ "$KERNEL_RC" = 0 ] && [ "$MODELS_RC" = 0 ]
