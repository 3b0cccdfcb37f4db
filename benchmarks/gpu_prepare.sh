#!/usr/bin/env bash
# The one-time preparation, here, of benchmarks/gpu_check.sh's device call (run from anywhere; it works in the
# repository root). Idempotent: what exists is kept.
#
#   bash benchmarks/gpu_prepare.sh
#
# 1. .git/info/exclude lists /.devdata/ and /.whl/, so neither travels as part of the working tree by accident
#    nor shows in `git status`; the device call names them in `carry`.
# 2. .devdata/kl224.zip: the real crops (train+val of ../shared/data/kneeKL224, WebP q70, ~44 MiB, about 2 min
#    of CPU) and device-data.py beside it, by ../shared/tools/device-data.py with the venv's Python (Pillow).
# 3. .whl: wheels of the packages the device image lacks, for Python 3.12 on x86-64 (pip download --no-deps).
#    The check needs none: the device image has torch, torchvision, numpy, Pillow, OpenCV, pandas, scikit-learn,
#    matplotlib and tqdm, and `kneelib train`, bench.py and the preflight start without papermill, pydicom,
#    grad-cam, ipywidgets, nbformat, Ray, kornia and onnxscript (checked here, below, as
#    tests/test_architecture.py does). KNEELIB_DEVICE_WHEELS="name==version ..." adds wheels for other work.
# 4. The working tree (tracked and untracked-not-ignored files) plus the carried folders must stay under the
#    device tool's 64 MiB: checked, with the sizes printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${KNEELIB_PREPARE_PYTHON:-.venv/bin/python}
LIMIT_MIB=64

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for line in /.devdata/ /.whl/; do
  grep -qxF "$line" "$exclude" 2>/dev/null || echo "$line" >> "$exclude"
done
echo "exclude: $(grep -cxF -e /.devdata/ -e /.whl/ "$exclude") lines in $exclude"

if [ -s .devdata/kl224.zip ] && [ -f .devdata/device-data.py ]; then
  echo "data: .devdata/kl224.zip exists ($(du -m .devdata/kl224.zip | cut -f1) MiB), kept"
else
  "$PY" ../shared/tools/device-data.py pack .devdata/kl224.zip
fi

carry=(.devdata)
if [ -n "${KNEELIB_DEVICE_WHEELS:-}" ]; then
  # shellcheck disable=SC2086
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $KNEELIB_DEVICE_WHEELS
  carry+=(.whl)
fi

# What the device runs must start without the packages its image lacks.
"$PY" - <<'EOF'
import sys
for m in ("papermill", "pydicom", "pytorch_grad_cam", "ipywidgets", "nbformat", "ray", "kornia", "onnxscript"):
    sys.modules[m] = None
sys.path[:0] = [".", "benchmarks"]
import kneelib.train.loop, kneelib.data.batched, kneelib.pipeline.profiles  # noqa: E401,F401
import bench, gpu_bench, gpu_preflight, gpu_check_summary  # noqa: E401,F401
from kneelib.cli import build_parser
build_parser().parse_args(["train", "--data", "d", "--arch", "resnet18", "--out", "o"])
print("imports: kneelib train, bench.py, the preflight and the summary start without the packages the device lacks")
EOF

tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb "${carry[@]}" | tail -1 | cut -f1)
total_mib=$(( (tree + carried) / 1048576 ))
echo "size: working tree $((tree / 1048576)) MiB + carried ${carry[*]} $((carried / 1048576)) MiB = $total_mib MiB (limit $LIMIT_MIB)"
if [ "$total_mib" -ge "$LIMIT_MIB" ]; then
  echo "gpu_prepare: error: $total_mib MiB would not travel (limit $LIMIT_MIB MiB)" >&2
  exit 1
fi
printf 'device call: command "bash benchmarks/gpu_check.sh", carry [%s], timeout_s 600\n' \
  "$(printf '"%s", ' "${carry[@]}" | sed 's/, $//')"
