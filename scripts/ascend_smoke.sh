#!/usr/bin/env bash
# First-NPU smoke test, under 5 minutes on one Ascend NPU: the tiny upstream parity cases (SVD at
# O2 and O0 against the float32 upstream video, float16 bounds) and sampling with random weights at
# full size, 14 frames of 576x1024 (2 steps: the first compiles, the second is the time per step).
# Prints one PASS/FAIL line per case with its errors or seconds, then one JSON line to paste back.
#
#   bash scripts/ascend_smoke.sh                 # on the NPU (DEVICE_ID picks the device, default 0)
#   bash scripts/ascend_smoke.sh --size 25x576x1024
#   bash scripts/ascend_smoke.sh --dry_run       # this CPU host, through the kernel contract doubles
#                                                # (tests/ascend/kernel_contracts.py), tiny sizes;
#                                                # the test suite runs this (tests/ascend/test_smoke.py)
# Exit status: 0 when every case passes. Expected on a 910*: see docs/ascend.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
reference="${SVD_MS_REFERENCE:-$root/../shared/reference}"
extra=()
for arg in "$@"; do
    if [ "$arg" = "--dry_run" ]; then
        # PyNative, one parity case (float32: CPU float16 is slow; the O2 path runs in graph mode in
        # tests/ascend/test_pipeline_on_ascend.py) and a tiny random-weight step: under a minute.
        extra=(--mode 1 --amp_levels O0 --config "$reference/tiny_svd.sgm.yaml" --size 3x64x64)
    fi
done
export SVD_MS_REFERENCE="$reference"
cd "$root"
PYTHONPATH="$root/tests:$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m ascend.smoke "${extra[@]}" "$@"
