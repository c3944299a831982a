"""The viewer's HTTP server (standard library ``ThreadingHTTPServer``).

Routes:
    GET  /                      the page (``static/index.html``)
    GET  /static/<name>         its script and style (package resources)
    GET  /api/info              model, banner, methods, bundled examples
    GET  /api/examples/<id>.png a bundled example's picture
    POST /api/run               JSON ``{"question", "methods": [spec, ...], "example": id | "image": data URL}``

Every refused request gets a JSON ``{"error": message}`` with a 4xx status that the page shows;
an unexpected failure is a 500 with the exception's message, and the server keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import sys
import traceback
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from ...errors import UsageError
from .inference import Engine

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # the image file itself
MAX_BODY_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 64 * 1024  # base64 in JSON, plus the rest of the request
DRAIN_LIMIT = 64 * 1024 * 1024  # a refused body larger than this is not read: the connection is dropped
MAX_PIXELS = 40_000_000
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}


def decode_image(data_url: str):
    """An RGB PIL image from a ``data:`` URL (or bare base64); :class:`UsageError` with the reason otherwise."""
    from PIL import Image

    payload = data_url.split(",", 1)[1] if data_url.startswith("data:") else data_url
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("the upload is not a readable file (bad base64)") from None
    if len(raw) > MAX_UPLOAD_BYTES:
        raise UsageError(f"the image is too large: {len(raw) / 2**20:.1f} MB (at most {MAX_UPLOAD_BYTES // 2**20} MB)")
    if not raw:
        raise UsageError("the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise UsageError(f"the image is too large: {img.width} x {img.height} pixels "
                                     f"(at most {MAX_PIXELS // 1_000_000} megapixels)")
                img.load()
                return img.convert("RGB")
    except UsageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UsageError("the image is too large (too many pixels)") from None
    except Exception as err:  # PIL raises many kinds for bad files: all mean "not an image"
        raise UsageError(f"the upload is not an image PIL can read ({type(err).__name__})") from None


class Handler(BaseHTTPRequestHandler):
    server_version = "visprune-viewer"
    engine: Engine  # set on the subclass made by make_server
    quiet = False

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    # --- responses ------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # --- routes ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        try:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            if path == "/api/info":
                return self._json(200, {**self.engine.info(), "max_upload_mb": MAX_UPLOAD_BYTES // 2**20})
            if path.startswith("/api/examples/") and path.endswith(".png"):
                return self._example(path[len("/api/examples/"):-len(".png")])
            self._error(404, f"no such page: {path}")
        except Exception as err:  # never take the server down
            self._fail(err)

    def do_POST(self) -> None:
        try:
            if self.path.split("?", 1)[0] != "/api/run":
                return self._error(404, f"no such endpoint: {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._drain(length)
                return self._error(413, f"the upload is too large (at most {MAX_UPLOAD_BYTES // 2**20} MB)")
            try:
                req = json.loads(self.rfile.read(length) or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError):
                return self._error(400, "the request is not JSON")
            if not isinstance(req, dict):
                return self._error(400, "the request must be a JSON object")
            image, relevant, source = self._image(req)
            methods = req.get("methods") or []
            if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
                raise UsageError("methods must be a list of method specs such as 'atp:keep=0.25'")
            self._json(200, self.engine.run(image, str(req.get("question") or ""), methods, relevant, source))
        except UsageError as err:
            self._error(400, str(err))
        except Exception as err:
            self._fail(err)

    def _drain(self, length: int) -> None:
        """Read and drop a refused body, so the client, still sending, gets the answer, not a reset."""
        self.close_connection = True
        left = min(length, DRAIN_LIMIT)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def _image(self, req: dict):
        if req.get("image"):
            if not isinstance(req["image"], str):
                raise UsageError("the image must be a data URL")
            return decode_image(req["image"]), None, "upload"
        ex = req.get("example")
        if ex is None:
            raise UsageError("pick an example or upload an image")
        try:
            e = self.engine.examples[int(ex)]
        except (ValueError, TypeError, IndexError):
            raise UsageError(f"no example {ex!r}") from None
        return e.image.convert("RGB"), e.relevant, f"example {e.id}"

    def _static(self, name: str) -> None:
        if name not in STATIC:
            return self._error(404, f"no such file: {name}")
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        self._send(200, body, STATIC[name])

    def _example(self, key: str) -> None:
        try:
            e = self.engine.examples[int(key)]
        except (ValueError, IndexError):
            return self._error(404, f"no example {key!r}")
        buf = io.BytesIO()
        e.image.save(buf, format="PNG")
        self._send(200, buf.getvalue(), "image/png")

    def _fail(self, err: Exception) -> None:
        traceback.print_exc(file=sys.stderr)
        try:
            self._error(500, f"the server failed on this request: {type(err).__name__}: {err}")
        except OSError:  # the client is gone
            pass


def make_server(engine: Engine, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False) -> ThreadingHTTPServer:
    """A bound server (``port=0``: a free port, read it from ``server.server_address``); call ``serve_forever``."""
    handler = type("BoundHandler", (Handler,), {"engine": engine, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
