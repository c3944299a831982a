#!/usr/bin/env bash
# What the viewer's browser test (tests/test_serve.py) and scripts/screenshot_viewer.py need: the
# system's Chromium and chromedriver (Debian packages, when run as root with apt-get) and Selenium
# in .venv (its locked version). Selenium is always given both paths, so it never downloads a browser or a driver.
# Without them the browser test skips and says why. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium && have chromedriver; then
  :
elif [ "$(id -u)" = 0 ] && have apt-get; then
  echo "installing chromium and chromium-driver (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
else
  echo "note: no chromium/chromedriver and no root apt-get: install them yourself" \
       "(Debian/Ubuntu: apt-get install chromium chromium-driver); the browser test will skip" >&2
fi

if [ -x .venv/bin/python ]; then
  # Selenium comes from requirements.lock through scripts/setup.sh; on its own, this takes the locked version.
  .venv/bin/python -c "import selenium" 2>/dev/null || .venv/bin/python -m pip install -q --no-deps \
    "$(grep -i '^selenium==' requirements.lock)" 2>&1 | { grep -v "^WARNING: Location" || true; }
else
  echo "note: no .venv yet: run scripts/setup.sh first, then this script" >&2
  exit 1
fi
.venv/bin/python -c "from visprune.apps.serve import browser; print(browser.missing() or 'browser test: ready')"
