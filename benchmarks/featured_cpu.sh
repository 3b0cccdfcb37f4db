#!/usr/bin/env bash
# The paper's featured comparison at what about HOURS of this machine buy: DenseNet-121 and SE-DenseNet-121, both
# scales, five seeds, the cpu profile with the image size, epochs and recipe that `--hours` chooses. A training
# notebook trains one model at one scale, seed after seed; the four train side by side (--jobs 4, threads governed:
# about the throughput of one at a time), so an interrupted sweep holds the same seeds of every model. Resumable:
# run it again and it goes on where it stopped, with the budget recorded in OUT/budget.json (not chosen again).
#
#   bash benchmarks/featured_cpu.sh              # OUT=runs/featured-cpu HOURS=8 DATA=../shared/data/kneeKL224
#   OUT=/work/featured bash benchmarks/featured_cpu.sh
#
# When every run has finished, it publishes the tables, figures and every run's history to figures/featured-cpu/
# (benchmarks/publish_sweep.py, with the projected and actual minutes of each session's log).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${OUT:-$REPO/runs/featured-cpu}")  # a relative OUT or DATA is the caller's, not the repository's
DATA=$(realpath -m "${DATA:-$REPO/../shared/data/kneeKL224}")
HOURS=${HOURS:-8}
cd "$REPO"
mkdir -p "$OUT"
log="$OUT/session-$(date +%Y%m%d-%H%M%S).log"
.venv/bin/kneelib reproduce --profile cpu --data "$DATA" --out "$OUT" --hours "$HOURS" --jobs 4 \
  --archs densenet121 se_densenet121 --seeds 21 42 84 126 168 2>&1 | tee "$log"
logs=()
for f in "$OUT"/session-*.log; do logs+=(--log "$f"); done
.venv/bin/python benchmarks/publish_sweep.py "$OUT" figures/featured-cpu "${logs[@]}"
