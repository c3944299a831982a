"""The ``visprune`` command line."""

from __future__ import annotations

import argparse
import sys

from .demo import DEFAULT_METHODS


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    run(n=args.n, seed=args.seed, out=args.out, methods=args.method or DEFAULT_METHODS, model_kind=args.model,
        timing=args.timing, repeats=args.repeats, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visprune", description="Adaptive visual-token pruning for VLMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="ATP, E-AdaPrune and baselines on held-out shapes questions")
    demo.add_argument("--n", type=int, default=100, help="held-out questions (default 100)")
    demo.add_argument("--seed", type=int, default=12345, help="evaluation seed (default 12345)")
    demo.add_argument("--out", default="visprune-demo", help="output folder (default visprune-demo)")
    demo.add_argument("--method", action="append", help="method spec, repeatable (default: the demo set)")
    demo.add_argument("--model", choices=["shapes", "random"], default=None,
                      help="the bundled shapes model (default when its checkpoint exists) or a random-weight LLaVA")
    demo.add_argument("--timing", type=int, default=10, help="samples timed per method (default 10)")
    demo.add_argument("--repeats", type=int, default=3, help="timed repeats per sample after a warm-up (default 3)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "n", 1) is not None and getattr(args, "n", 1) < 1:
        parser.error("--n must be at least 1")
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"visprune {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
