#!/usr/bin/env bash
# Set up visprune on a fresh machine: a virtual environment in .venv with exactly the versions of
# requirements.lock (the same environment on any day), torch's CPU build installed first and pinned
# (a bare `torch` requirement would pull the multi-GB CUDA build), the package itself (editable),
# Chromium for the viewer's browser test and Java for the standard COCO caption tokenizer.
# The lock is refreshed by scripts/check_latest.sh --update-lock, only when the suite passes on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOCK=requirements.lock
TORCH_VERSION=${TORCH_VERSION:-$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' "$LOCK")}
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  quiet .venv/bin/python -m pip install -q "torch==${TORCH_VERSION}"
fi
# Every package at its locked version, nothing resolved anew (lmms-eval's torchvision requirement
# is left out on purpose: see the lmms extra in pyproject.toml).
quiet .venv/bin/python -m pip install -q --no-deps -r "$LOCK"
quiet .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
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
