"""``visprune serve``: a web page to try pruning methods on one image and one question, side by side.

    python -m visprune.apps.serve --port 8000            # the shapes model (random-weight fallback + banner)
    python -m visprune.apps.serve --model PATH_OR_HUB_ID  # any supported model

Pick a bundled example or upload an image, type a question, pick methods and budgets: each method
shows the kept tokens over the image, the answer, the kept count, the counted FLOPs share of the
unpruned prefill and the latency. Files: :mod:`.server` (HTTP), :mod:`.inference` (what is
computed), ``static/`` (the page).
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to a ``visprune`` sub-command set (its ``func(args)`` runs the server)."""
    p = subparsers.add_parser("serve", help="a web page to compare methods on one image and question",
                              description="Serve the visprune viewer on HOST:PORT until interrupted.")
    _arguments(p)
    p.set_defaults(func=_run)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--model", default="shapes",
                   help="'shapes' (default; a random-weight LLaVA with a banner when no checkpoint), 'random', "
                        "a local model folder or a hub id")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--repeats", type=int, default=3, help="timed generate calls per method after the first (default 3)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds a connection may stay idle (a stalled upload) before it is closed (default 30)")
    p.add_argument("--quiet", action="store_true", help="no request log")


def _run(args: argparse.Namespace) -> int:
    from ...evaluation.models import resolve_device
    from ...errors import UsageError
    from .inference import Engine, load
    from .server import make_server

    if args.repeats < 1 or args.timeout <= 0:
        print("visprune serve: --repeats must be at least 1 and --timeout above 0", file=sys.stderr)
        return 2
    try:
        loaded = load(args.model, resolve_device(args.device), args.dtype)
    except (UsageError, FileNotFoundError) as err:
        print(f"visprune serve: {err}", file=sys.stderr)
        return 2
    if loaded.banner:
        print(f"NOTE: {loaded.banner}", file=sys.stderr)
    server = make_server(Engine(loaded, repeats=args.repeats), args.host, args.port, quiet=args.quiet,
                         timeout=args.timeout)
    host, port = server.server_address[:2]
    print(f"visprune viewer on http://{host}:{port}/ (model: {loaded.name}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visprune.apps.serve", description="Serve the visprune viewer.")
    _arguments(parser)
    return _run(parser.parse_args(argv))


__all__ = ["add_parser", "main"]
