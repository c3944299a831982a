"""The ``visprune`` command line: ``demo``, ``eval``, ``sweep``, ``tune``, ``bench`` and ``serve``."""

from __future__ import annotations

import argparse
import sys

from ..methods import DEFAULT_METHODS
from ..errors import UsageError


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    run(n=args.n, seed=args.seed, out=args.out, methods=args.method or DEFAULT_METHODS, model_kind=args.model,
        timing=args.timing, repeats=args.repeats, progress=not args.quiet)
    return 0


def _settings(args: argparse.Namespace, specs: list[str] | None = None):
    """Validated :class:`EvalSettings` from the options; any usage error raises :class:`UsageError`."""
    try:
        return _build_settings(args, args.method or [] if specs is None else specs)
    except UsageError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None


def _build_settings(args: argparse.Namespace, specs: list[str]):
    from ..evaluation import EvalSettings, build_task, parse_methods
    from ..evaluation.corruptions import parse_corruptions

    methods = parse_methods(specs)
    corruptions = parse_corruptions(args.corrupt)
    task = build_task(args.task, n=args.n, seed=args.seed, questions=args.questions, annotations=args.annotations,
                      images=args.images, image_pattern=args.image_pattern)
    settings = EvalSettings(
        model=args.model, task=task, methods=methods, out=args.out, corruptions=corruptions,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, timing=args.timing, repeats=args.repeats,
        max_new_tokens=args.max_new_tokens, stop_after=args.stop_after, caption_tokenizer=args.caption_tokenizer,
        progress=not args.quiet, flops=args.flops,
    )
    from ..evaluation.runner import check

    check(settings)
    return settings


def _eval(args: argparse.Namespace) -> int:
    from ..evaluation import run
    from ..evaluation.summary import table

    summary = run(_settings(args))
    if summary is not None:
        print(table(summary))
        print(f"wrote {args.out}/summary.json")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from ..evaluation.sweep import run_sweep, sweep_specs

    try:
        specs = sweep_specs(args.methods, args.keeps, args.energies)
    except ValueError as err:
        raise UsageError(str(err)) from None
    run_sweep(_settings(args, specs), overlays=args.overlays)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from ..evaluation.tune import report, run_tune

    try:
        alphas = tuple(float(a) for a in args.alphas.split(",") if a.strip())
    except ValueError:
        raise UsageError(f"--alphas {args.alphas!r}: comma-separated numbers in [0, 1), e.g. 0.25,0.5,0.75") from None
    args.timing, args.flops = 0, False  # tune measures accuracy only; the same settings a rerun resumes with
    settings = _settings(args, [])
    try:
        measured = run_tune(settings, args.k, alphas, into_model=args.into_model, argv=args.argv)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(report(measured))
    print(f"wrote {args.out}/visprune.json" + (" and the model folder's" if args.into_model else ""))
    return 0


def _common(p: argparse.ArgumentParser, seed: int = 12345) -> None:
    p.add_argument("--model", required=True, help="'shapes' (the bundled model), a local folder or a hub id")
    p.add_argument("--task", required=True, help="shapes-vqa, shapes-vqa-crowded, shapes-caption, vqav2, gqa or coco-caption")
    # --num-samples: under torchrun (Python 3.11 argparse) a bare --n is taken as torchrun's own --nnodes...
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=None,
                   help="first N examples (default: shapes 100, files all); spell it --num-samples under torchrun")
    p.add_argument("--seed", type=int, default=seed, help=f"shapes scene seed (default {seed})")
    p.add_argument("--questions", help="questions JSON (vqav2, gqa)")
    p.add_argument("--annotations", help="annotations JSON (vqav2 answers, coco-caption captions)")
    p.add_argument("--images", help="image folder (vqav2, gqa, coco-caption)")
    p.add_argument("--image-pattern", help="image file name pattern, e.g. 'COCO_test2015_{image_id:012d}.jpg'")
    p.add_argument("--batch-size", type=int, default=1, help="samples per generate call (default 1)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    p.add_argument("--corrupt", action="append", metavar="NAME[:SEVERITY]|all",
                   help="ImageNet-C corruption, repeatable; without a severity all five; 'all': 15 x 5")
    p.add_argument("--timing", type=int, default=10, help="samples timed per method (default 10, 0: none)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per sample after a warm-up (default 3)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation length (default: per task)")
    p.add_argument("--no-flops", dest="flops", action="store_false",
                   help="do not count FLOPs (saves one prefill per sample; FLOPs columns stay empty)")
    p.add_argument("--stop-after", type=int, default=None, help="evaluate at most K new samples per method, then stop")
    p.add_argument("--caption-tokenizer", default="auto", choices=["auto", "ptb", "simple", "none"],
                   help="caption tokenisation for CIDEr / BLEU (default auto: PTB when java is there)")
    p.add_argument("--out", required=True, help="output folder; a rerun with the same folder resumes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _bench(args: argparse.Namespace) -> int:
    from .bench.command import run_command

    return run_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visprune", description="Adaptive visual-token pruning for VLMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="ATP, E-AdaPrune and baselines on held-out shapes questions")
    demo.add_argument("--n", type=int, default=100, help="held-out questions (default 100)")
    demo.add_argument("--seed", type=int, default=12345, help="evaluation seed (default 12345)")
    demo.add_argument("--out", default="visprune-demo", help="output folder (default visprune-demo)")
    demo.add_argument("--method", action="append", help="method spec, repeatable (default: the demo set)")
    demo.add_argument("--model", choices=["shapes", "tower", "random"], default=None,
                      help="the bundled shapes VLM (default when it exists), its trained tower with an untrained LM "
                           "(default otherwise: grounding is real, answers are not), or a random-weight LLaVA")
    demo.add_argument("--timing", type=int, default=10, help="samples timed per method (default 10)")
    demo.add_argument("--repeats", type=int, default=3, help="timed repeats per sample after a warm-up (default 3)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    ev = sub.add_parser("eval", help="methods side by side on a task: accuracy, FLOPs, latency, memory, robustness",
                        description="Evaluate pruning methods against the unpruned model (always measured) on one "
                                    "task. Per-sample results are appended to OUT/samples; rerunning resumes. "
                                    "Shard across processes with: torchrun --nproc-per-node N -m visprune eval ...")
    _common(ev)
    ev.add_argument("--method", action="append", metavar="SPEC",
                    help="method spec (e.g. atp:keep=0.25, e-adaprune:energy=0.9), repeatable; 'none' is always added")
    ev.set_defaults(func=_eval)

    sw = sub.add_parser("sweep", help="methods x budgets: a table, a Pareto plot of accuracy vs FLOPs, overlays")
    _common(sw)
    sw.add_argument("--methods", default="atp,e-adaprune,random", help="comma-separated method names")
    sw.add_argument("--keeps", default="0.5,0.25,0.125", help="kept shares for ratio-budget methods")
    sw.add_argument("--energies", default="0.99,0.95,0.9", help="energy shares for energy-budget methods")
    sw.add_argument("--overlays", type=int, default=4, help="samples in the overlay picture (0: none)")
    sw.set_defaults(func=_sweep)

    tu = sub.add_parser("tune", help="choose ATP's alpha for a model by measurement (writes visprune.json)",
                        description="Measure ATP at each --alphas against its saliency term alone (cls) at --k kept "
                                    "tokens, for each question relevance the model has (its CLIP partner, lmtext), "
                                    "paired with 95%% intervals; write the chosen alpha and the verdict (helps, tie, "
                                    "harms) to OUT/visprune.json and, with --into-model, to the model's folder, where "
                                    "prune_ reads it (PruneConfig(alpha=None), the default).")
    _common(tu, seed=20000)  # calibration scenes: disjoint from the evaluation seed 12345 the docs report
    tu.add_argument("--k", type=int, default=32, help="visual tokens kept per image (default 32)")
    tu.add_argument("--alphas", default="0.25,0.5,0.75", help="ATP fusion weights to measure (default 0.25,0.5,0.75)")
    tu.add_argument("--into-model", action="store_true", help="also write visprune.json into the model's folder")
    tu.set_defaults(func=_tune)

    be = sub.add_parser("bench", help="latency vs FLOPs, visprune's overhead, memory: pruned vs unpruned, same run")
    what = be.add_mutually_exclusive_group()
    what.add_argument("--geometry", default=None,
                      help="tiny, small (default; CPU-sized, 576 tokens), small-hd (LLaVA-NeXT any-resolution, 5 "
                           "crops, 2,928 tokens), small-video (Qwen2.5-VL-shaped, an 8-frame clip, 256 video tokens; "
                           "with --batch-sizes clips of 8, 6, 4, 2 frames), llava-1.5-7b or qwen2.5-vl-7b-video (real "
                           "size, random weights: 14 / 17 GB in bf16; Qwen2.5-VL-7B on a 32-frame 448 px clip, 4,096 "
                           "video tokens; their FLOPs only, on the meta device, when there is no CUDA and no --device)")
    what.add_argument("--model", metavar="DIR",
                      help="instead of a geometry: a saved model folder (or hub id) of any supported family, loaded "
                           "as visprune eval loads it, prompted with its own processor and chat template about one "
                           "synthetic picture; methods it refuses are listed with prune_'s message; report and "
                           "--markdown section named MODEL_TYPE-FOLDER[-DEVICE]")
    be.add_argument("--image-size", metavar="WxH", help="the synthetic picture of --model (default 640x480)")
    be.add_argument("--method", action="append", help="method spec, repeatable (default: visprune.methods.QUICK_METHODS: atp, e-adaprune, random at about a quarter of the tokens)")
    be.add_argument("--json", help="write the full report here")
    be.add_argument("--markdown", help="replace this geometry's (or model's) section of a Markdown file "
                                       "(e.g. BENCHMARKS.md)")
    be.add_argument("--repeats", type=int, default=5, help="timed runs per method (default 5)")
    be.add_argument("--warmup", type=int, default=2, help="discarded runs first (default 2)")
    be.add_argument("--new-tokens", type=int, default=32, help="forced new tokens of the generate timing (default 32)")
    be.add_argument("--device", default="auto",
                    help="cpu, cuda[:N], meta (the real-size geometries' FLOPs only) or auto (default): cuda when "
                         "there is one, else cpu; llava-1.5-7b and qwen2.5-vl-7b-video without CUDA are counted on meta")
    be.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    be.add_argument("--compile", nargs="?", const="inductor", default=False, metavar="BACKEND",
                    help="time with the language model under torch.compile(dynamic=True), backend inductor unless "
                         "named; written to its own BENCHMARKS.md section")
    th = be.add_argument_group("throughput", "samples per second at the batch sizes servers run (BENCHMARKS.md, "
                                             "'Throughput'); the options below need --batch-sizes")
    th.add_argument("--batch-sizes", metavar="B,B,...", help="measure throughput at these batch sizes (e.g. 1,4,16)")
    th.add_argument("--images", type=int, default=1, help="images (video geometries: clips) per prompt (default 1)")
    th.add_argument("--loop", choices=["bs1"], help="also feed the pruned model the batch's samples one at a time, as "
                                                    "the pruning toolkits evaluate")
    th.add_argument("--scoring", choices=["qk", "eager"], default="qk",
                    help="eager: also read [CLS] / FastV attention from eager attention maps, as the official code does")
    th.add_argument("--plot", metavar="PNG", help="latency and throughput against the visual tokens kept")
    th.add_argument("--section", help="name of the BENCHMARKS.md section (default: GEOMETRY-throughput)")
    be.add_argument("--quiet", action="store_true", help="no progress lines (written to stderr, only on a terminal)")
    be.set_defaults(func=_bench)

    from .serve import add_parser as add_serve_parser

    add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "n", 1) is not None and getattr(args, "n", 1) < 1:
        parser.error("--n must be at least 1")
    try:
        return args.func(args)
    except UsageError as err:  # bad settings or files, found before the model ran
        print(f"visprune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as err:
        if args.command != "demo":
            raise  # a failure while evaluating is a bug to see in full, not a usage error

        print(f"visprune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"visprune {args.command}: interrupted; what was written is kept, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
