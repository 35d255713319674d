#!/usr/bin/env bash
# The one prepared GPU run: CUDA tests, issue 11's pipeline benchmark (its goals as PASS/MISS
# lines), then the kernel benchmarks while time is left, and one summary.
#
#   .venv/bin/python benchmarks/prepare_gpu_carry.py   # here, once: lengths + texts
#   bash benchmarks/gpu_all.sh                         # there, carrying .gpu_carry
#
# Full logs go to $OUT (when set) and benchmarks/out/; the console gets a short summary
# last. A failing step is reported and the run goes on; the exit status is nonzero if
# any step failed. GPU_BUDGET_S (default 460) caps the whole run (issue 11: within 8 minutes).
# GPU_STEPS (comma-separated step names, default all) runs a subset, for a short call that
# fills in what an earlier run left unmeasured, e.g.
#   GPU_STEPS=bench_attention,bench_pooling bash benchmarks/gpu_all.sh
# PIPELINE_ARGS are extra arguments for bench_gpu_pipeline.py (e.g. --sections scale).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
LOG_DIR="${OUT:-benchmarks/out}"
mkdir -p "$LOG_DIR" benchmarks/out
if [ -z "${BENCH_ARGS:-}" ]; then unset TRITON_INTERPRET; fi  # compile for the GPU, never interpret
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BUDGET="${GPU_BUDGET_S:-460}"
# No ../shared on the GPU machine: tests and benchmarks read the carried text instead.
if [ -z "${MINILM_DATA_DIR:-}" ] && [ ! -d ../shared/data ] && [ -d .gpu_carry ]; then
  export MINILM_DATA_DIR="$PWD/.gpu_carry"
fi
# BENCH_ARGS=--smoke checks the plumbing on a CPU machine (interpreter, tiny sizes).
BENCH_ARGS="${BENCH_ARGS:-}"
PIPELINE_ARGS="${PIPELINE_ARGS:-}"
GPU_STEPS="${GPU_STEPS:-all}"
START=$SECONDS
FAILED=()
STEPS=()

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
"$PY" -c 'import sys, torch, triton; print(f"python {sys.version.split()[0]} torch {torch.__version__} triton {triton.__version__} cuda {torch.version.cuda}")' || true
[ -f .gpu_carry/scifact_lengths.json ] || echo "WARNING: .gpu_carry/scifact_lengths.json missing: synthetic lengths"

selected() { [[ "$GPU_STEPS" == all || ",$GPU_STEPS," == *",$1,"* ]]; }

# step NAME CAP_SECONDS CMD...: run with a timeout of min(CAP, time left - 20 s).
step() {
  local name=$1 cap=$2; shift 2
  selected "$name" || return 0
  local left=$(( BUDGET - (SECONDS - START) - 20 ))
  local limit=$(( cap < left ? cap : left ))
  if (( limit < 15 )); then
    echo "-- $name: skipped, out of time"; FAILED+=("$name(skipped)"); return 0
  fi
  local t0=$SECONDS rc=0
  timeout "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1 || rc=$?
  STEPS+=("$name rc=$rc $(( SECONDS - t0 ))s")
  echo "-- $name: rc=$rc in $(( SECONDS - t0 ))s (limit ${limit}s); last lines of $LOG_DIR/$name.log:"
  tail -n "${TAIL_LINES:-4}" "$LOG_DIR/$name.log" | sed 's/^/   | /'
  (( rc == 0 )) || FAILED+=("$name")
}

# 22 tests took about 125 s on an H100 with an empty Triton cache (2026-11-27).
step cuda_tests 180 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/
# Issue 11: default batch and sweep for both engines, GPU-busy share, tokenize-only rate,
# cold start, the 200k-text scale run; its JSON feeds the summary below.
step gpu_pipeline 260 "$PY" benchmarks/bench_gpu_pipeline.py $BENCH_ARGS $PIPELINE_ARGS
# Kernel benchmarks last: they were measured before (benchmarks/RESULTS.md) and are
# skipped when the budget runs out.
step bench_attention 60 "$PY" benchmarks/bench_attention.py --dtypes float16 $BENCH_ARGS
step bench_pooling 45 "$PY" benchmarks/bench_pooling.py $BENCH_ARGS
step bench_layernorm 45 "$PY" benchmarks/bench_layernorm.py $BENCH_ARGS
step bench_gelu 30 "$PY" benchmarks/bench_gelu.py --dtypes float16 $BENCH_ARGS

cp benchmarks/out/*.csv benchmarks/out/*.json "$LOG_DIR"/ 2>/dev/null || true
PIPE_JSON=benchmarks/out/gpu_pipeline.json
if [ -n "$BENCH_ARGS" ]; then PIPE_JSON=benchmarks/out/gpu_pipeline_smoke.json; fi
{
  "$PY" benchmarks/summarize.py $BENCH_ARGS || true
  if ! selected gpu_pipeline; then :  # an older run's JSON would read as this run's
  elif [ -f "$PIPE_JSON" ]; then "$PY" benchmarks/bench_gpu_pipeline.py --summary "$PIPE_JSON" || true
  else echo "no $PIPE_JSON: the gpu_pipeline step did not finish"; fi
} | tee "$LOG_DIR/summary.txt"
echo "steps: ${STEPS[*]:-none}"
echo "total $(( SECONDS - START ))s"
if (( ${#FAILED[@]} )); then
  echo "FAILED: ${FAILED[*]}"
  exit 1
fi
