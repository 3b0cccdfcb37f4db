#!/usr/bin/env bash
# The prepared GPU check (issues #12, #11 and #30): one call of the device tool, at most 10 minutes.
#
# Here, once: `bash benchmarks/gpu_prepare.sh` packs the real crops (train+val, WebP q70, ~44 MiB) into
# .devdata/kl224.zip, puts any wheels the device lacks into .whl (none are needed: the device image has every
# package `kneelib train` and bench.py import), lists both folders in .git/info/exclude, checks that the
# working tree plus .devdata stays under the device tool's 64 MiB, and prints the call:
#   command "bash benchmarks/gpu_check.sh", carry [".devdata"] (and ".whl" if it made one), timeout_s 600.
# The device receives the working tree (tracked and untracked-not-ignored files) plus the carried ignored
# folders; $OUT's files come back (at most 8, 2 folders deep): the five below.
#
# Rehearsal on a CPU (tiny settings, loader workers; the data straight from ../shared/data/kneeKL224 when there
# is no zip):
#   KNEELIB_CHECK_DEVICE=cpu KNEELIB_CHECK_TINY=1 KNEELIB_CHECK_PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#   KNEELIB_BENCH_FAIL=data_path (same command): the benchmark's data stage fails; gpu-bench.json keeps the rest.
#
# In this order, each result written to $OUT as soon as it exists, so the 560 s budget can only cut the end:
#   0. preflight.json  benchmarks/gpu_preflight.py (at most 60 s): GPU name and memory, /dev/shm, one augmented
#                      batch on the GPU with no host sync, one ResNet-18 train and eval step captured and replayed.
#                      Anything wrong: one line "PREFLIGHT FAILED: ..." and the call ends (exit 3).
#   1. gpu-bench.json  bench.py --device cuda: the training loop per architecture at batch 32, eager and CUDA
#                      graph (SE-DenseNet-121 and DenseNet-121 first), eval rates, peak memory; then the data
#                      paths; the paper profile's projected time. Rewritten after every stage; a failing stage
#                      is recorded under "errors" and the next one runs.
#   2. prior.json      `kneelib train --recipe scratch --epochs 2` at 224 px, SE-DenseNet-121 and DenseNet-121
#                      first: validation accuracy after epochs 1 and 2 (the majority class, KL0, is 39.7% of
#                      val), seconds, and each run's GPU footprint (config.json's gpu_memory).
#   3. memory.json     the two DenseNets trained at once on the one GPU (what kneelib.pipeline.resolve_jobs
#                      assumes: several runs per GPU), against each alone; what one run needs (max_memory_reserved
#                      plus its CUDA context) and the jobs resolve_jobs would choose with RUN_GPU_GIB and with it.
#   4. prior.json      the ResNets' from-scratch runs, as the budget allows.
#   check.log          everything printed (the tee is waited for before the call ends).
set -uo pipefail
OUT=${OUT:-/tmp/kneelib-gpu-check}
WORK=${KNEELIB_CHECK_WORK:-/tmp/kneelib-check}
BUDGET=${KNEELIB_CHECK_BUDGET:-560}
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK/prior" "$WORK/pair"
exec 3>&1 4>&2
exec > >(tee "$OUT/check.log") 2>&1
TEE=$!
start=$(date +%s)
elapsed() { echo $(($(date +%s) - start)); }
SAMPLER=
finish() {
  local rc=$?
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  echo "== done in $(elapsed) s (exit $rc)"
  exec 1>&3 2>&4  # closes the pipe: tee writes the rest of check.log and ends
  wait "$TEE" 2>/dev/null || while kill -0 "$TEE" 2>/dev/null; do sleep 0.1; done
  exit "$rc"
}
trap finish EXIT
DEVICE=${KNEELIB_CHECK_DEVICE:-cuda}
DATA=${KNEELIB_CHECK_DATA:-/tmp/kl224}
PY=${KNEELIB_CHECK_PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "CHECK FAILED: the wheels in .whl did not install"; exit 2; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
if [ ! -d "$DATA/train" ]; then
  if [ -f .devdata/kl224.zip ]; then
    "$PY" .devdata/device-data.py unpack .devdata/kl224.zip "$DATA" || { echo "CHECK FAILED: unpacking the data"; exit 2; }
  elif [ "$DEVICE" = cpu ] && [ -d ../shared/data/kneeKL224/train ]; then
    DATA=../shared/data/kneeKL224  # the rehearsal reads the crops in place
  else
    echo "CHECK FAILED: no data: $DATA/train missing and no .devdata/kl224.zip (run benchmarks/gpu_prepare.sh here and carry .devdata)"
    exit 2
  fi
fi
echo "data: $DATA ($(elapsed) s)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1 > "$WORK/baseline_mib"
fi

if [ -n "${KNEELIB_CHECK_TINY:-}" ]; then  # CPU rehearsal: seconds, not minutes
  BENCH=(--image-size 64 --batch-size 8 --steps 2 --warmup 1 --limit 40 --workers 2 --archs se_densenet121 resnet18)
  PRIOR=(--image-size 64 --limit 40 --batch-size 8)
  FIRST="se_densenet121"; PAIR="resnet18 se_resnet18"; REST="resnet18"
  TRAIN_LOOP=(--train-loop)
else
  BENCH=(--archs se_densenet121 densenet121 resnet18 se_resnet18 resnet34 se_resnet34 resnet50 se_resnet50)
  PRIOR=(--image-size 224)
  FIRST="se_densenet121 densenet121"; PAIR="se_densenet121 densenet121"
  REST="resnet18 se_resnet18 resnet34 se_resnet34 resnet50 se_resnet50"
  TRAIN_LOOP=()
fi
left() { echo $((BUDGET - $(elapsed))); }
summary() { "$PY" benchmarks/gpu_check_summary.py "$OUT" "$WORK"; }

echo "== 0. preflight ($(elapsed) s)"
timeout 60 "$PY" benchmarks/gpu_preflight.py --data "$DATA" --device "$DEVICE" --json "$OUT/preflight.json"
rc=$?
if [ "$rc" -ne 0 ]; then
  [ "$rc" -eq 124 ] && echo "PREFLIGHT FAILED: it took more than 60 s"
  exit 3
fi

echo "== 1. speed: bench.py --device $DEVICE ($(elapsed) s)"
bench_limit=$(($(left) < 300 ? $(left) : 300))
timeout $((bench_limit > 1 ? bench_limit : 1)) "$PY" benchmarks/bench.py --device "$DEVICE" "${TRAIN_LOOP[@]}" \
  --data "$DATA" --json "$OUT/gpu-bench.json" "${BENCH[@]}"
echo "bench exit $? ($(elapsed) s)"

train() {  # train ARCH FOLDER EPOCHS: one from-scratch run within what is left of the budget
  local limit=$(($(left) - 10))
  if [ "$limit" -lt 20 ]; then echo "skipped $1: the 10-minute budget is spent"; return 1; fi
  timeout "$limit" "$PY" -m kneelib train --data "$DATA" --arch "$1" --recipe scratch --epochs "$3" \
    --device "$DEVICE" --out "$2/$1" --quiet "${PRIOR[@]}"
  echo "$1 exit $? ($(elapsed) s)"
}

echo "== 2. from scratch, alone: does every architecture leave the prior in epoch 1? ($(elapsed) s)"
for arch in $FIRST; do train "$arch" "$WORK/prior" 2; summary; done

echo "== 3. two runs at once on one device ($PAIR) ($(elapsed) s)"
if [ "$(left)" -gt 60 ]; then
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$WORK/pair_samples_mib" 2>/dev/null &
    SAMPLER=$!
  fi
  pids=()
  for arch in $PAIR; do train "$arch" "$WORK/pair" 1 & pids+=($!); done
  wait "${pids[@]}"
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; SAMPLER=
  summary
else
  echo "skipped: the 10-minute budget is spent"
fi

echo "== 4. from scratch, alone: the ResNets ($(elapsed) s)"
for arch in $REST; do train "$arch" "$WORK/prior" 2 || break; summary; done
exit 0
