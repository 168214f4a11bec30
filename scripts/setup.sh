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
  # Headless Chromium for the web page's browser test (tests/app/test_app_browser.py): Playwright's
  # own browser download does not work offline, so the test drives Debian's /usr/bin/chromium.
  if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "note: install Debian's chromium (apt-get install chromium) for tests/app/test_app_browser.py" >&2
    fi
  fi
else
  .venv/bin/python -m pip install -q -e .
fi
# The CPU kernels compiled ahead of time (svd_ms/modules/cpu_kernels: exact GELU, GroupNorm,
# stride-1 convolutions); without them the CPU backend runs the slower composed or native
# operators and says so.
if ! command -v g++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi
.venv/bin/python -m svd_ms.modules.cpu_kernels || echo "note: continuing without the CPU kernels (composed GELU and GroupNorm, MindSpore's convolutions)" >&2
echo "svd-ms environment ready in .venv"
