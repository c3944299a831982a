"""``visprune bench`` on the command line: options checked, the device chosen, the report printed and written."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from ...errors import UsageError
from ...evaluation.models import DTYPES, resolve_device
from ...methods import QUICK_METHODS, parse_method
from .folder import IMAGE_SIZE, folder_geometry
from .geometries import GEOMETRIES, LLAVA_7B_PARAMETERS, QWEN_7B_PARAMETERS
from .meta import bench_meta

#: the geometries built at real size: their parameter count (weights in host memory on the CPU); without
#: CUDA and without --device they are counted on the ``meta`` device
REAL_SIZE = {"llava-1.5-7b": LLAVA_7B_PARAMETERS, "qwen2.5-vl-7b-video": QWEN_7B_PARAMETERS}
from .plot import scaling_plot
from .report import markdown, meta_markdown, throughput_markdown, write_json, write_markdown_section
from .run import bench
from .throughput import throughput


def run_command(args: argparse.Namespace) -> int:
    """``visprune bench ...``: check the options, run or count, print and write the report."""
    methods = args.method or None
    try:
        for spec in methods or []:
            parse_method(spec)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    command = "visprune " + " ".join(shlex.quote(a) for a in (args.argv or []))
    if getattr(args, "model", None) is not None:
        return _model_command(args, methods, command)
    if getattr(args, "image_size", None) is not None:
        raise UsageError("--image-size sets the picture of a model folder: it needs --model")
    args.geometry = args.geometry or "small"
    if args.geometry not in GEOMETRIES:
        raise UsageError(f"unknown geometry {args.geometry!r}; valid: {', '.join(GEOMETRIES)}")
    device = bench_device(args.geometry, args.device)
    if args.batch_sizes is not None:
        return _throughput_command(args, methods, device, command)
    _check_batch_one(args)
    if device == "meta":
        if args.compile:
            raise UsageError(f"--compile needs timings; {args.geometry} on the meta device only counts FLOPs "
                             "(time it with --device cuda, or --device cpu with the memory for its weights)")
        report = bench_meta(methods or QUICK_METHODS, args.geometry)
        text = meta_markdown(report, command)
        key = args.geometry
    else:
        dtype = DTYPES[args.dtype]
        if args.geometry in REAL_SIZE and device == "cpu":
            check_host_memory(REAL_SIZE[args.geometry] * torch.empty(0, dtype=dtype).element_size(), args.dtype,
                              args.geometry)
        kwargs = dict(repeats=args.repeats, warmup=args.warmup, new_tokens=args.new_tokens, device=device,
                      dtype=dtype, progress=progress_printer(args.quiet), compile=args.compile)
        report = bench(args.geometry, methods, **kwargs) if methods else bench(args.geometry, **kwargs)
        text = markdown(report, command)
        # BENCHMARKS.md sections: `small` and `tiny` on CPU keep their plain names; any other timed run
        # is named with its device (llava-1.5-7b-cpu, llava-1.5-7b-cuda, small-cuda), apart from the
        # real-size geometries' meta-device FLOPs counts (`llava-1.5-7b`, `qwen2.5-vl-7b-video`)
        plain = device == "cpu" and args.geometry not in REAL_SIZE
        key = args.geometry if plain else f"{args.geometry}-{torch.device(device).type}"
    print(text)
    if args.json:
        write_json(report, args.json)
    if args.markdown:
        write_markdown_section(Path(args.markdown), key + ("-compiled" if args.compile else ""), text)
    return 0


def _check_batch_one(args: argparse.Namespace) -> None:
    for flag, default in (("images", 1), ("loop", None), ("scoring", "qk"), ("plot", None), ("section", None)):
        if getattr(args, flag) != default:
            raise UsageError(f"--{flag} measures throughput: it needs --batch-sizes")


def _model_command(args: argparse.Namespace, methods: list[str] | None, command: str) -> int:
    """``--model DIR``: the folder's model timed as the geometries are (batch 1, or throughput with
    ``--batch-sizes``); its report and BENCHMARKS.md section are named ``MODEL_TYPE-FOLDER``."""
    if args.device == "meta":
        raise UsageError("--device meta counts the real-size geometries' FLOPs only; a model folder runs on cpu or "
                         "cuda")
    device = resolve_device(args.device)
    if args.batch_sizes is not None:
        sizes = parse_batch_sizes(args.batch_sizes)
        _check_throughput(args)
        if args.scoring == "eager":
            raise UsageError("--scoring eager reads the LLaVA geometries' attention maps; with --model use "
                             "--scoring qk")
    else:
        _check_batch_one(args)
    size = parse_image_size(args.image_size) if args.image_size is not None else IMAGE_SIZE
    geo = folder_geometry(args.model, device, args.dtype, size)
    dtype = DTYPES[args.dtype]
    progress = progress_printer(args.quiet)
    if args.batch_sizes is not None:
        report = throughput(geo, methods or QUICK_METHODS, sizes, images=args.images, repeats=args.repeats,
                            warmup=args.warmup, new_tokens=args.new_tokens, loop=args.loop, device=device,
                            dtype=dtype, progress=progress)
        suffix = "" if device == "cpu" else f"-{torch.device(device).type}"
        key = args.section or f"{geo.name}-throughput{suffix}"
        text = throughput_markdown(report, command)
    else:
        kwargs = dict(repeats=args.repeats, warmup=args.warmup, new_tokens=args.new_tokens, device=device, dtype=dtype,
                      progress=progress, compile=args.compile)
        report = bench(geo, methods, **kwargs) if methods else bench(geo, **kwargs)
        key = f"{geo.name}-{torch.device(device).type}" + ("-compiled" if args.compile else "")
        text = markdown(report, command)
    return _emit(args, report, text, key)


def _check_throughput(args: argparse.Namespace) -> None:
    if args.compile:
        raise UsageError("--compile is not measured with --batch-sizes")
    if args.images < 1:
        raise UsageError(f"--images must be at least 1, got {args.images}")
    if args.repeats < 1 or args.warmup < 0:
        raise UsageError("--repeats must be at least 1 and --warmup at least 0")


def _throughput_command(args: argparse.Namespace, methods: list[str] | None, device: str, command: str) -> int:
    sizes = parse_batch_sizes(args.batch_sizes)
    if args.scoring == "eager" and args.geometry in ("small-video", "qwen2.5-vl-7b-video"):
        raise UsageError("--scoring eager reads the LLaVA geometries' attention maps; on a video geometry use "
                         "--scoring qk")
    if device == "meta":
        raise UsageError("throughput needs timings; the meta device only counts FLOPs (use --device cpu or cuda)")
    _check_throughput(args)
    dtype = DTYPES[args.dtype]
    if args.geometry in REAL_SIZE and device == "cpu":
        check_host_memory(REAL_SIZE[args.geometry] * torch.empty(0, dtype=dtype).element_size(), args.dtype,
                          args.geometry)
    report = throughput(args.geometry, methods or QUICK_METHODS, sizes, images=args.images, repeats=args.repeats,
                        warmup=args.warmup, new_tokens=args.new_tokens, loop=args.loop, scoring=args.scoring,
                        device=device, dtype=dtype, progress=progress_printer(args.quiet))
    text = throughput_markdown(report, command)
    suffix = "" if device == "cpu" else f"-{torch.device(device).type}"
    return _emit(args, report, text, args.section or f"{args.geometry}-throughput{suffix}")


def _emit(args: argparse.Namespace, report: dict, text: str, key: str) -> int:
    """The report's Markdown to stdout, and to the files the options name (its ``key`` section of ``--markdown``)."""
    print(text)
    if args.json:
        write_json(report, args.json)
    if args.plot:
        scaling_plot(report, args.plot)
    if args.markdown:
        write_markdown_section(Path(args.markdown), key, text)
    return 0


def progress_printer(quiet: bool):
    """Progress lines go to stderr, and only when it is a terminal (as ``eval``'s bars): a report piped
    or logged stays clean, and ``--quiet`` silences them anywhere."""
    if quiet or not sys.stderr.isatty():
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


def parse_image_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width, height); a clear error for anything else."""
    try:
        w, h = (int(part) for part in text.lower().split("x"))
    except ValueError:
        w = h = 0
    if w < 1 or h < 1:
        raise UsageError(f"--image-size takes WIDTHxHEIGHT in pixels (e.g. 640x480), got {text!r}")
    return w, h


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``; a clear error for anything else."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batch-sizes takes integers >= 1 separated by commas (e.g. 1,4,16), got {text!r}")
    return sizes


def bench_device(geometry: str, device: str) -> str:
    """``auto``: CUDA when there is one; else the CPU, except for the real-size geometries
    (llava-1.5-7b, qwen2.5-vl-7b-video), which are then counted on the ``meta`` device (FLOPs, no
    timings). ``meta`` is only for them."""
    if device == "meta" or (device == "auto" and geometry in REAL_SIZE and not torch.cuda.is_available()):
        if geometry not in REAL_SIZE:
            raise UsageError(f"--device meta counts FLOPs at real size only ({', '.join(REAL_SIZE)}); {geometry} "
                             "runs on cpu or cuda")
        return "meta"
    return resolve_device(device)


def check_host_memory(need: int, dtype: str, geometry: str = "llava-1.5-7b") -> None:
    """Refuse, with the numbers, a real-size model that cannot fit in the host's memory (Linux)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return  # not known here: let it try
    if need > 0.9 * available:
        smaller = "--dtype bfloat16, " if dtype == "float32" else ""
        raise UsageError(f"{geometry} in {dtype} needs {need / 2**30:.1f} GiB for its weights and this machine has "
                         f"{available / 2**30:.1f} GiB available: use {smaller}a GPU (--device cuda), or --device "
                         "meta (FLOPs only)")
