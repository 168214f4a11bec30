#!/usr/bin/env bash
# Create .venv and install svd-ms from pyproject.toml (editable). `--test` adds the test extras
# (PyTorch CPU, transformers, diffusers) used to compare against PyTorch implementations, and the
# web page's (Gradio, Playwright for its browser test; Chromium itself comes from .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "--test" ]; then
  # torch first and pinned: a looser request would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test,web]"   # web: the page and its browser test
else
  .venv/bin/python -m pip install -q -e .
fi
echo "svd-ms environment ready in .venv"
