#!/usr/bin/env bash
# Drift check: build a second environment from pyproject.toml's ranges instead of the lock, then
# run the test suite in it. Run it when transformers (or anything else visprune depends on)
# publishes a release, and before refreshing the lock; refresh the lock only when it passes.
#
#   scripts/check_latest.sh                 the newest releases the ranges allow, in .venv-latest
#   scripts/check_latest.sh --lowest        transformers at its declared lower bound, in .venv-lowest
#   scripts/check_latest.sh --update-lock   the newest releases; if the suite passes, they become requirements.lock
#
# Extra arguments go to pytest. torch stays at the lock's CPU build (TORCH_VERSION to change it):
# a bare torch requirement would pull the multi-GB CUDA build. lmms-eval is installed without its
# dependencies, as in scripts/setup.sh. A few minutes for the set-up, then the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOCK=requirements.lock
TORCH_VERSION=${TORCH_VERSION:-$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' "$LOCK")}
mode=latest update=0
while [ $# -gt 0 ]; do
  case "$1" in
    --lowest) mode=lowest; shift ;;
    --update-lock) update=1; shift ;;
    *) break ;;
  esac
done
[ "$mode" = lowest ] && [ "$update" = 1 ] && { echo "--update-lock locks the newest releases, not --lowest" >&2; exit 2; }
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }

venv=".venv-$mode"
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
py="$venv/bin/python"
quiet "$py" -m pip install -q --upgrade pip setuptools
quiet "$py" -m pip install -q "torch==${TORCH_VERSION}"
pins=()
if [ "$mode" = lowest ]; then
  low=$("$py" -c 'import re, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(re.search(r">=\s*([\w.]+)", d).group(1) for d in deps if d.startswith("transformers")))')
  pins+=("transformers==$low")
fi
quiet "$py" -m pip install -q --upgrade-strategy eager -e ".[eval,test,lmms,browser]" "${pins[@]}"
quiet "$py" -m pip install -q --no-deps "$(grep -i '^lmms.eval==' "$LOCK")"
echo "== $mode: $("$py" -c 'import torch, transformers, filelock, tokenizers, huggingface_hub as h
print(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, huggingface_hub {h.__version__}, filelock {filelock.__version__}")')"
"$py" -m pytest -p no:cacheprovider "$@"

if [ "$update" = 1 ]; then
  {
    echo "# The exact environment of scripts/setup.sh (installed with --no-deps, torch first)."
    echo "# Regenerate: scripts/check_latest.sh --update-lock (writes it only when the suite passes there)."
    echo "# Made $(date -u +%Y-%m-%d) with $("$PYTHON" --version 2>&1) on $(uname -m)."
    "$py" -m pip freeze --all --exclude-editable | grep -v -E '^(pip|visprune)==' | sed -E 's/^(torch==[0-9.]+)\+.*/\1/'
  } > "$LOCK.new"
  mv "$LOCK.new" "$LOCK"
  echo "updated $LOCK"
fi
