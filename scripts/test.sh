#!/usr/bin/env bash
# Set up (scripts/setup.sh), check that imports only go down the layers (lint-imports, contracts in
# pyproject.toml), then run the default test suite on every core. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
