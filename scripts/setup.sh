#!/usr/bin/env bash
# Create .venv and install svd-ms. `--test` adds the test-only dependencies (PyTorch CPU,
# transformers, diffusers) used to compare against PyTorch implementations.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "--test" ]; then
  # torch first and pinned: a looser request would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -r requirements-test.txt
else
  .venv/bin/python -m pip install -q -r requirements.txt
fi
echo "svd-ms environment ready in .venv"
