"""The viewer (``visprune serve``): its HTTP API, bad uploads, and the page in a real headless Chromium.

The server runs in this process on 127.0.0.1, on a free port, and is shut down at the end. It
serves the shapes model when its checkpoint exists, else the random-weight fallback (with its
banner). The browser test drives the system's Chromium with Selenium and skips, saying why, when
either is missing (``scripts/install_browser.sh`` installs both).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

from visprune import shapes
from visprune.apps.serve import browser
from visprune.apps.serve.inference import Engine, bundled_examples, load
from visprune.methods import QUICK_METHODS
from visprune.apps.serve.server import MAX_UPLOAD_BYTES, decode_image, make_server
from visprune.errors import UsageError

TRAINED = (shapes.CHECKPOINT / "config.json").is_file()


@pytest.fixture(scope="module")
def url():
    engine = Engine(load("shapes"), repeats=1)
    server = make_server(engine, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/api/run", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_page_and_info(url):
    status, ctype, body = _get(url + "/")
    assert status == 200 and ctype.startswith("text/html") and b"visprune viewer" in body
    assert _get(url + "/static/app.js")[0] == 200
    info = json.loads(_get(url + "/api/info")[2])
    assert info["trained"] == TRAINED and (info["banner"] is None) == TRAINED
    assert "atp" in info["methods"] and info["max_upload_mb"] == 10 and len(info["examples"]) == 8
    status, ctype, body = _get(url + "/api/examples/0.png")
    assert ctype == "image/png" and Image.open(io.BytesIO(body)).size == (224, 224)


def test_run_compares_methods_on_an_example(url):
    q = json.loads(_get(url + "/api/info")[2])["examples"][0]["question"]
    status, data = _post(url, json.dumps({"example": 0, "question": q,
                                          "methods": ["atp:keep=0.25", "random:budget=fixed,k=16", "nope"]}).encode())
    assert status == 200, data
    ref, atp, rnd, bad = data["results"]
    assert ref["label"] == "none (unpruned)" and ref["kept"] == ref["total"] == 256 and ref["flops_share"] == 1.0
    assert atp["kept"] == 64 and rnd["kept"] == 16
    assert 0 < rnd["flops_share"] < atp["flops_share"] < 1  # counted: fewer tokens, fewer FLOPs
    for r in (ref, atp, rnd):
        assert r["latency_ms"] > 0 and isinstance(r["answer"], str)
        assert Image.open(io.BytesIO(base64.b64decode(r["overlay"].split(",", 1)[1]))).size == (224, 224)
    assert "unknown method 'nope'" in bad["error"]  # one bad spec fails its own card only
    if TRAINED:  # the viewer's unpruned answer is the library's own greedy answer on the same example
        ex = bundled_examples()[0]
        model, processor = shapes.load()
        assert ref["answer"] == shapes.answer(model, processor, ex.image, ex.question)


def test_uploaded_image_of_any_size_is_answered(url):
    img = Image.new("RGB", (300, 180), (30, 120, 200))
    status, data = _post(url, json.dumps({"image": _png(img), "question": "what colour is the circle ?",
                                          "methods": ["atp:keep=0.5"]}).encode())
    assert status == 200, data
    assert [r["kept"] for r in data["results"]] == [256, 128]


@pytest.mark.parametrize("body, status, message", [
    (b"not json", 400, "not JSON"),
    (json.dumps({"image": "data:text/plain;base64," + base64.b64encode(b"hello").decode(), "question": "q ?"}),
     400, "not an image"),
    (json.dumps({"image": "data:image/png;base64,@@@", "question": "q ?"}), 400, "bad base64"),
    (json.dumps({"example": 99, "question": "q ?"}), 400, "no example"),
    (json.dumps({"question": "what ?"}), 400, "pick an example or upload"),
    (json.dumps({"example": 0, "question": "   "}), 400, "type a question"),
    (json.dumps({"example": 0, "question": "q ?", "methods": ["atp"] * 7}), 400, "at most 6"),
])
def test_bad_requests_get_a_message(url, body, status, message):
    got, data = _post(url, body if isinstance(body, bytes) else body.encode())
    assert got == status and message in data["error"]


def test_too_large_uploads_are_refused(url):
    for size, status in ((MAX_UPLOAD_BYTES + 1, 400), (MAX_UPLOAD_BYTES + 2**20, 413)):  # file limit, body limit
        big = base64.b64encode(b"\x89PNG" + bytes(size)).decode()
        got, data = _post(url, json.dumps({"image": big, "question": "q ?"}).encode())
        assert got == status and "too large" in data["error"], (size, got, data)
    bomb = Image.new("1", (10_000, 5_000))  # 50 megapixels in a few kB of PNG
    with pytest.raises(UsageError, match="too large"):
        decode_image(_png(bomb))
    assert _get(url + "/api/info")[0] == 200  # still serving


@pytest.mark.browser
def test_viewer_in_headless_chromium(url, tmp_path):
    reason = browser.missing()
    if reason:
        pytest.skip(f"no browser to drive: {reason}")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    t0 = time.perf_counter()
    with browser.chromium() as driver:
        wait = WebDriverWait(driver, 60)
        driver.get(url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert driver.find_element(By.ID, "banner").is_displayed() == (not TRAINED)

        driver.find_element(By.ID, "example-2").click()
        question = driver.find_element(By.ID, "question")
        expected = json.loads(_get(url + "/api/info")[2])["examples"][2]
        assert question.get_attribute("value") == expected["question"]
        question.clear()
        question.send_keys(expected["question"])
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: "on example 2 (224 \u00d7 224 px)" in d.find_element(By.ID, "status").text)

        cards = driver.find_elements(By.CSS_SELECTOR, "#results .card")
        assert [c.get_attribute("data-label") for c in cards] == ["none (unpruned)", *QUICK_METHODS]
        for c in cards:
            img = c.find_element(By.CSS_SELECTOR, "img.overlay")
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 224
            assert c.find_element(By.CSS_SELECTOR, ".answer").text
        assert cards[1].find_element(By.CSS_SELECTOR, ".kept").text.startswith("64 / 256")
        assert "of unpruned" in cards[1].find_element(By.CSS_SELECTOR, ".flops").text
        if TRAINED:  # the page shows what the library answers on the same picture and question
            model, processor = shapes.load()
            sample = shapes.make_samples(n=3, seed=4242)[2]  # bundled_examples' source
            assert sample.question == expected["question"]
            want = shapes.answer(model, processor, sample.image, sample.question)
            assert cards[0].find_element(By.CSS_SELECTOR, ".answer").text == want
        assert not driver.find_element(By.ID, "error").is_displayed()

        # an uploaded picture (not square, not 224 px): answered, drawn on the square the tower sees
        good = tmp_path / "upload.png"
        Image.new("RGB", (320, 200), (40, 175, 60)).save(good)
        driver.find_element(By.ID, "upload").send_keys(str(good))
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: "on upload (320 \u00d7 200 px)" in d.find_element(By.ID, "status").text)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#results .card img.overlay")) == 4
        assert not driver.find_element(By.ID, "error").is_displayed()
        assert driver.find_element(By.ID, "question-hint").text == ""  # no ground truth for an upload

        # a file that is not an image: a clear message on the page, and the page keeps working
        bad = tmp_path / "notes.txt"
        bad.write_text("this is not an image")
        driver.find_element(By.ID, "upload").send_keys(str(bad))
        driver.find_element(By.ID, "run").click()
        error = driver.find_element(By.ID, "error")
        wait.until(ec.visibility_of(error))
        assert "not an image" in error.text
        driver.find_element(By.ID, "example-0").click()
        assert not error.is_displayed()
    print(f"browser test: {time.perf_counter() - t0:.1f}s")


def test_any_supported_model_folder(tmp_path):
    """``--model PATH``: a LLaVA-NeXT folder; its overlay has two panels (the base image, the crops)."""
    from visprune import testing as random_models

    model, processor = random_models.llava_next()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    engine = Engine(load(str(tmp_path)), repeats=1)
    assert engine.loaded.banner is None and engine.loaded.name == str(tmp_path)
    out = engine.run(Image.new("RGB", (120, 90), (200, 30, 30)), "what colour is the circle ?", ["atp:keep=0.5"])
    ref, atp = out["results"]
    assert ref["kept"] == ref["total"] and 0 < atp["kept"] < atp["total"] and atp["flops_share"] < 1
    assert isinstance(atp["answer"], str)
    for r in (ref, atp):
        assert Image.open(io.BytesIO(base64.b64decode(r["overlay"].split(",", 1)[1]))).size == (2 * 224 + 4, 224)


@pytest.mark.subprocess
def test_command_line_serves_until_interrupted():
    """``python -m visprune.apps.serve --port 0``: prints its address, serves, stops cleanly on Ctrl-C."""
    import os
    import re
    import signal
    import subprocess
    import sys

    # a shell runs background jobs with SIGINT ignored, and Python only turns SIGINT into
    # KeyboardInterrupt when it starts with the default action: give the server a terminal's Ctrl-C
    proc = subprocess.Popen([sys.executable, "-m", "visprune.apps.serve", "--port", "0", "--quiet", "--repeats", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line + proc.stderr.read()
        info = json.loads(_get(f"http://127.0.0.1:{m.group(1)}/api/info")[2])
        assert info["trained"] == TRAINED
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        if not TRAINED:
            assert "RANDOM-WEIGHT" in proc.stderr.read()  # the fallback is said on the console too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_add_parser_wires_a_serve_subcommand():
    import argparse

    from visprune.apps.serve import add_parser

    parser = argparse.ArgumentParser(prog="visprune")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", "--host", "127.0.0.1", "--port", "8123", "--model", "random"])
    assert (args.command, args.port, args.model, args.repeats) == ("serve", 8123, "random", 3) and callable(args.func)


def test_text_encoder_is_loaded_once_and_used(tmp_path):
    """CLIP-space scorers get the model's text encoder (as shapes does), loaded once for every request."""
    from visprune import testing as random_models
    from visprune.apps.serve.inference import Loaded

    model, processor = random_models.llava()
    clip = random_models.clip_model(model.config.vision_config)
    clip.save_pretrained(tmp_path)
    random_models.tokenizer().save_pretrained(tmp_path)
    engine = Engine(Loaded(model, processor, str(tmp_path), "tiny llava", True), repeats=1)
    img = random_models.images(1)[0]
    for _ in range(2):
        out = engine.run(img, "what colour is the circle ?", ["text:keep=0.5", "atp:keep=0.25"])
        assert [r.get("kept") for r in out["results"]] == [16, 8, 4], out
    assert list(engine._clips) == [str(tmp_path)]
    assert out["results"][1]["config"]["text_encoder"] == str(tmp_path)
