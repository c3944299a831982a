#!/usr/bin/env bash
# Set up visprune on a fresh machine: a virtual environment in .venv with the CPU build of torch
# (installed first and pinned: a bare `torch` requirement would pull the multi-GB CUDA build),
# the package with its eval and test extras, and Java for the standard COCO caption tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${TORCH_VERSION}" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -m pip install -q -e ".[eval,test,lmms,browser]" 2>&1 | grep -v "^WARNING: Location" || true
# lmms-eval without its torchvision requirement (see the lmms extra in pyproject.toml)
.venv/bin/python -m pip install -q --no-deps "lmms-eval==0.7.3" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, transformers, visprune" >/dev/null
.venv/bin/python -c "import torchvision" 2>/dev/null && { echo "torchvision is installed in .venv: it breaks the CPU torch; remove it" >&2; exit 1; }
# Chromium and its driver for the viewer's browser test
bash scripts/install_browser.sh

if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Java (default-jre-headless) for the PTB caption tokenizer"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "note: no java found; caption metrics fall back to the pure-Python PTB tokenizer" >&2
  fi
fi
