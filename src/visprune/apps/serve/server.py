"""The viewer's HTTP server (standard library ``ThreadingHTTPServer``).

Routes:
    GET  /                      the page (``static/index.html``)
    GET  /static/<name>         its script and style (package resources)
    GET  /api/info              model, banner, methods, bundled examples
    GET  /api/examples/<id>.png a bundled example's picture
    POST /api/run               JSON ``{"question", "methods": [spec, ...], "example": id | "image": data URL}``

Every refused request gets a JSON ``{"error": message}`` with a 4xx status that the page shows;
an unexpected failure is a 500 with the exception's message, and the server keeps serving.

Hardened for a machine whose browser visits other sites, and for hostile uploads:

- ``Host`` must name the address the server listens on (or a loopback name): a DNS-rebinding page
  gets 403; a POST must be ``Content-Type: application/json`` (415 otherwise: a cross-site form
  cannot send it without a CORS preflight, which this server never grants) and, when it carries
  an ``Origin``, one of this server's (403).
- Bodies: ``Content-Length`` is required (411), numeric and non-negative (400), and at most
  ``MAX_BODY_BYTES`` (413); JSON nested too deeply is a 400.
- Images: at most ``MAX_PIXELS`` and an aspect ratio of at most ``MAX_ASPECT``, read from the file
  header before anything is decoded (processors scale the short side up to their size, so a
  1 x 8,000 picture would become 224 x 1.8 M pixels); PIL's own limit is set to the same.
- At most ``MAX_PENDING`` run requests are decoded or wait for the model at once (503 beyond),
  at most ``MAX_CONNECTIONS`` connections are open (more are closed at once), and a connection
  idle for ``timeout`` seconds is closed.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import sys
import threading
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
MAX_ASPECT = 20  # longest side / shortest side
MAX_PENDING = 4  # run requests decoding or waiting for the model at once
MAX_CONNECTIONS = 64
TIMEOUT_S = 30.0  # a connection idle this long (a stalled upload) is closed
LOOPBACK = {"localhost", "127.0.0.1", "[::1]", "::1"}
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
            with Image.open(io.BytesIO(raw)) as img:  # reads the header only
                if img.width * img.height > MAX_PIXELS:
                    raise UsageError(f"the image is too large: {img.width} x {img.height} pixels "
                                     f"(at most {MAX_PIXELS // 1_000_000} megapixels)")
                if max(img.size) > MAX_ASPECT * max(1, min(img.size)):
                    raise UsageError(f"the image is too elongated: {img.width} x {img.height} pixels (at most "
                                     f"{MAX_ASPECT}:1; the model's processor would scale its short side up)")
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

    def _host_allowed(self) -> bool:
        """The ``Host`` header names this server (a DNS-rebinding page's host does not)."""
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
        return "*" in self.server.allowed_hosts or name in self.server.allowed_hosts

    def _refused(self) -> bool:
        if not self._host_allowed():
            self._error(403, f"this server does not answer for host {self.headers.get('Host')!r}")
            return True
        return False

    def do_GET(self) -> None:
        try:
            if self._refused():
                return
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
            self.close_connection = True  # one request per connection: nothing of a refused body lingers
            if self._refused():
                return
            if self.path.split("?", 1)[0] != "/api/run":
                return self._error(404, f"no such endpoint: {self.path}")
            origin = self.headers.get("Origin")
            if origin is not None and origin.split("://", 1)[-1].lower() != (self.headers.get("Host") or "").lower():
                return self._error(403, f"requests from {origin} are not answered (cross-site)")
            if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
                return self._error(415, "send the request as Content-Type: application/json")
            raw_length = self.headers.get("Content-Length")
            if raw_length is None:
                return self._error(411, "Content-Length is required")
            if not raw_length.strip().isdigit():
                return self._error(400, f"Content-Length must be a non-negative integer, got {raw_length!r}")
            length = int(raw_length)
            if length > MAX_BODY_BYTES:
                self._drain(length)
                return self._error(413, f"the upload is too large (at most {MAX_UPLOAD_BYTES // 2**20} MB)")
            body = self.rfile.read(length)
            if not self.server.pending.acquire(blocking=False):
                return self._error(503, f"the viewer is busy ({MAX_PENDING} requests in progress): try again shortly")
            try:
                self._run(body)
            finally:
                self.server.pending.release()
        except UsageError as err:
            self._error(400, str(err))
        except Exception as err:
            self._fail(err)

    def _run(self, body: bytes) -> None:
        try:
            req = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UsageError("the request is not JSON") from None
        except RecursionError:
            raise UsageError("the request's JSON is nested too deeply") from None
        if not isinstance(req, dict):
            raise UsageError("the request must be a JSON object")
        image, relevant, source = self._image(req)
        methods = req.get("methods") or []
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise UsageError("methods must be a list of method specs such as 'atp:keep=0.25'")
        question = req.get("question") or ""
        if not isinstance(question, str):
            raise UsageError("the question must be text")
        self._json(200, self.engine.run(image, question, methods, relevant, source))

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
        return self._pick(ex)

    def _pick(self, ex: Any):
        if isinstance(ex, bool) or not isinstance(ex, (int, str)) or not str(ex).isdigit() \
                or int(ex) >= len(self.engine.examples):
            raise UsageError(f"no example {ex!r} (valid: 0..{len(self.engine.examples) - 1})")
        e = self.engine.examples[int(ex)]
        return e.image.convert("RGB"), e.relevant, f"example {e.id}"

    def _static(self, name: str) -> None:
        if name not in STATIC:
            return self._error(404, f"no such file: {name}")
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        self._send(200, body, STATIC[name])

    def _example(self, key: str) -> None:
        if not key.isdigit() or int(key) >= len(self.engine.examples):
            return self._error(404, f"no example {key!r}")
        e = self.engine.examples[int(key)]
        buf = io.BytesIO()
        e.image.save(buf, format="PNG")
        self._send(200, buf.getvalue(), "image/png")

    def _fail(self, err: Exception) -> None:
        traceback.print_exc(file=sys.stderr)
        try:
            self._error(500, f"the server failed on this request: {type(err).__name__}: {err}")
        except OSError:  # the client is gone
            pass


class Server(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a cap on open connections and on run requests in progress."""

    daemon_threads = True
    request_queue_size = MAX_CONNECTIONS  # the listen backlog (5 by default: a burst of clients got resets)

    def __init__(self, address, handler, allowed_hosts: set[str]):
        super().__init__(address, handler)
        self.allowed_hosts = allowed_hosts
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.pending = threading.BoundedSemaphore(MAX_PENDING)

    def process_request(self, request, client_address) -> None:
        if not self.connections.acquire(blocking=False):  # too many open: close this one at once
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.connections.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


def make_server(engine: Engine, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False,
                timeout: float = TIMEOUT_S) -> Server:
    """A bound server (``port=0``: a free port, read it from ``server.server_address``); call ``serve_forever``.

    It answers only for ``Host`` names of the address it listens on and loopback names; listening
    on every interface (``0.0.0.0`` / ``::``) it answers any ``Host`` (the Origin and Content-Type
    checks still stop cross-site posts)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own bomb check, for every decode in this process
    handler = type("BoundHandler", (Handler,), {"engine": engine, "quiet": quiet, "timeout": timeout})
    allowed = {"*"} if host in ("0.0.0.0", "::", "") else {*LOOPBACK, host.lower(), f"[{host.lower()}]"}
    return Server((host, port), handler, allowed)
