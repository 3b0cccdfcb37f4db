#!/usr/bin/env bash
# The prepared GPU check (issues #12 and #11): one call of the device tool, at most 10 minutes.
#
# Here, once (the data and the two wheels kneelib needs that the GPU machine lacks, kept out of git):
#   .venv/bin/python ../shared/tools/device-data.py pack .devdata/kl224.zip  # train+val as WebP q70, 44 MiB, 2 min (needs Pillow)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl kornia==0.9.0 kornia_rs==0.2.0
#   (both folders are listed in .git/info/exclude)
# Then one device call: command "bash benchmarks/gpu_check.sh", carry [".devdata", ".whl"], timeout_s 600.
# Tested on a CPU with tiny settings (55 s, 2026-12-02):
#   KNEELIB_CHECK_DEVICE=cpu KNEELIB_CHECK_TINY=1 KNEELIB_CHECK_PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#
# What it measures (files under $OUT):
#   gpu-bench.json  benchmarks/bench.py --device cuda: the training loop per architecture at batch 32, eager
#                   and CUDA graph, eval rates, peak memory; the data paths; the paper profile's projected time
#   prior.json      the scratch recipe from random weights at 224 px: every architecture's validation accuracy
#                   after epochs 1 and 2 (the majority class, KL0, is 39.7% of val), 5-class
#   check.log       everything printed
set -uo pipefail
OUT=${OUT:-/tmp/kneelib-gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
DEVICE=${KNEELIB_CHECK_DEVICE:-cuda}
DATA=${KNEELIB_CHECK_DATA:-/tmp/kl224}
export PYTHONUNBUFFERED=1
start=$(date +%s)
PY=${KNEELIB_CHECK_PYTHON:-python3}
if [ -d .whl ] && ! "$PY" -c "import kornia" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
if [ ! -d "$DATA/train" ]; then
  "$PY" .devdata/device-data.py unpack .devdata/kl224.zip "$DATA" || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>/dev/null || true
"$PY" -c "import torch, kornia; print('torch', torch.__version__, 'kornia', kornia.__version__, 'cuda', torch.cuda.is_available())"

if [ -n "${KNEELIB_CHECK_TINY:-}" ]; then  # CPU rehearsal: seconds, not minutes
  BENCH=(--image-size 64 --steps 2 --warmup 1 --limit 40 --workers 0 --archs resnet18 se_densenet121)
  PRIOR=(--image-size 64 --limit 40 --batch-size 8)
  ARCHS="resnet18 se_densenet121"
  TRAIN_LOOP=(--train-loop)
else
  BENCH=()
  PRIOR=(--image-size 224)
  ARCHS="resnet18 resnet34 resnet50 densenet121 se_resnet18 se_resnet34 se_resnet50 se_densenet121"
  TRAIN_LOOP=()
fi

echo "== 1. speed: bench.py --device $DEVICE ($(($(date +%s) - start)) s)"
timeout 330 "$PY" benchmarks/bench.py --device "$DEVICE" "${TRAIN_LOOP[@]}" --data "$DATA" \
  --json "$OUT/gpu-bench.json" "${BENCH[@]}"
echo "bench exit $?"

echo "== 2. from scratch: does every architecture leave the prior in epoch 1? ($(($(date +%s) - start)) s)"
for arch in $ARCHS; do
  left=$((560 - ($(date +%s) - start)))
  if [ "$left" -lt 25 ]; then echo "skipped $arch: the 10-minute budget is spent"; continue; fi
  timeout "$left" "$PY" -m kneelib train --data "$DATA" --arch "$arch" --recipe scratch --epochs 2 \
    --device "$DEVICE" --out "/tmp/prior/$arch" --quiet "${PRIOR[@]}"
  echo "$arch exit $?"
done
"$PY" - "$OUT/prior.json" <<'EOF'
import csv, json, sys
from pathlib import Path
report = {}
for run in sorted(Path("/tmp/prior").glob("*")):
    rows = list(csv.DictReader((run / "history.csv").open())) if (run / "history.csv").is_file() else []
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    report[run.name] = {"val_acc": [float(r["val_acc"]) for r in rows], "train_loss": [float(r["train_loss"]) for r in rows],
                        "seconds": [float(r["seconds"]) for r in rows], "execution": config.get("execution"),
                        "counts": config.get("counts")}
    print(run.name, report[run.name]["val_acc"], report[run.name]["seconds"], config.get("execution", {}).get("step"))
Path(sys.argv[1]).write_text(json.dumps(report, indent=1) + "\n")
EOF
echo "== done in $(($(date +%s) - start)) s"
