"""Take docs/viewer.png: the viewer on a bundled example, methods side by side, in headless Chromium.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/screenshot_viewer.py [--model shapes|random|PATH] [--out docs/viewer.png]

Starts the server on 127.0.0.1 (a free port) in this process, drives the system's Chromium with
Selenium (scripts/install_browser.sh), and shuts both down.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from visprune.apps.serve import browser
from visprune.apps.serve.inference import Engine, load
from visprune.apps.serve.server import make_server

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--example", type=int, default=2, help="bundled example to show (default 2)")
    ap.add_argument("--method", action="append", help="method specs (default: the page's defaults)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "viewer.png"))
    args = ap.parse_args()
    reason = browser.missing()
    if reason:
        raise SystemExit(f"cannot take the screenshot: {reason}")

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = make_server(Engine(load(args.model)), "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}/"
    try:
        with browser.chromium(width=1280, height=1000) as driver:
            wait = WebDriverWait(driver, 120)
            driver.get(url)
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
            if args.method:
                for b in driver.find_elements(By.CSS_SELECTOR, ".method-row .remove"):
                    b.click()
                for spec in args.method:
                    driver.find_element(By.ID, "add-method").click()
                    name, _, settings = spec.partition(":")
                    row = driver.find_elements(By.CSS_SELECTOR, ".method-row")[-1]
                    row.find_element(By.CSS_SELECTOR, f".method option[value='{name}']").click()
                    field = row.find_element(By.CSS_SELECTOR, ".settings")
                    field.clear()
                    field.send_keys(settings)
            driver.find_element(By.ID, f"example-{args.example}").click()
            n = len(driver.find_elements(By.CSS_SELECTOR, ".method-row")) + 1
            driver.find_element(By.ID, "run").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card")) == n)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            # the whole page in one picture: a viewport as tall as the document (Chromium's DevTools)
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.out)
    finally:
        server.shutdown()
        server.server_close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
