"""A headless Chromium driven by Selenium, for the viewer's browser test and its screenshot.

Uses the system's Chromium and chromedriver (Debian: ``apt-get install chromium chromium-driver``;
``scripts/install_browser.sh``) and never downloads a browser or a driver. :func:`missing` says
what is not there, so a test can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def _first(paths: tuple[str, ...], env: str) -> str | None:
    for p in (os.environ.get(env), *paths):
        if p and Path(p).is_file() and os.access(p, os.X_OK):
            return p
    return None


def missing() -> str | None:
    """Why no browser can be driven here (for ``pytest.skip``), or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (scripts/install_browser.sh)"
    if _first(CHROMIUM, "VISPRUNE_CHROMIUM") is None:
        return "no Chromium found (apt-get install chromium; scripts/install_browser.sh)"
    if _first(CHROMEDRIVER, "VISPRUNE_CHROMEDRIVER") is None:
        return "no chromedriver found (apt-get install chromium-driver; scripts/install_browser.sh)"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900):
    """A Selenium ``WebDriver`` on a fresh headless Chromium profile; quit and cleaned up on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    reason = missing()
    if reason:
        raise RuntimeError(reason)
    profile = tempfile.mkdtemp(prefix="visprune-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "VISPRUNE_CHROMIUM")
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    # an explicit driver path: Selenium Manager (which would download one) is never asked
    driver = webdriver.Chrome(service=Service(executable_path=_first(CHROMEDRIVER, "VISPRUNE_CHROMEDRIVER")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
