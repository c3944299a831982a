#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: `visprune demo`. Extra arguments go to it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/visprune demo "$@"
