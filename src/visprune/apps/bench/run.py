"""``bench``: the unpruned model and every method timed side by side on one geometry's inputs."""

from __future__ import annotations

import platform
import statistics
from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

from ...errors import UsageError
from ...measure import clock
from ...measure.flops import count_flops
from ...measure.hostreads import count_cuda_syncs, count_host_reads
from ...measure.memory import prefill_memory
from ...measure.timing import in_turns, sync, timed
from ...methods import QUICK_METHODS, Method, parse_method
from ...transform import last_selection, prune_, unprune_
from .geometries import Geometry, build_geometry, visual_tokens
from .refusals import refused_row, split_refused


@torch.no_grad()
def bench(
    geometry: str | Geometry,
    methods: list[str] | tuple[str, ...] = QUICK_METHODS,
    repeats: int = 5,
    warmup: int = 2,
    new_tokens: int = 32,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str], None] | None = print,
    compile: bool | str = False,
) -> dict:
    """Run the benchmark; returns the JSON-ready report.

    ``compile``: time with the language model under ``torch.compile(dynamic=True)`` (the same
    compiled module for every method: pruned prompts only change its sequence length); a string
    names the backend (default ``inductor``). FLOPs, memory and host reads are counted before
    compiling; warm-up runs absorb the compilation.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    if compile and warmup < 1:
        raise ValueError("compile needs at least one warm-up run (it compiles there)")
    parsed = [parse_method(m) for m in methods if m != "none"]
    geo = geometry if isinstance(geometry, Geometry) else build_geometry(geometry, device, dtype)
    model, inputs, processor = geo.model, geo.inputs, geo.prune_processor
    dev = next(model.parameters()).device
    runnable, refused = split_refused(model, parsed, processor)
    all_methods = [Method("none", None), *runnable]
    gen_kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    def run(method: Method, what: str) -> tuple[float, float]:
        if method.config is not None:
            prune_(model, method.config, processor=processor)
        try:
            if what == "prefill":
                seconds = timed(lambda: model(**inputs), dev)
                if dev.type == "cuda" and method.config is not None:
                    with clock.synchronized():  # an untimed run whose clock waits for the device
                        model(**inputs)
            else:
                seconds = timed(lambda: model.generate(**inputs, **gen_kwargs), dev)
            overhead = last_selection(model).overhead_seconds if method.config is not None else 0.0
        finally:
            if method.config is not None:
                unprune_(model)
        return seconds, overhead

    rows: dict[str, dict] = {}
    for m in all_methods:
        if m.config is not None:
            prune_(model, m.config, processor=processor)
        try:
            flops, _ = count_flops(model, **inputs)
            peak, kv = prefill_memory(model, inputs, dev)
            with torch.no_grad(), count_host_reads() as reads:
                model(**inputs)
            syncs = None
            if dev.type == "cuda":
                sync(dev)
                with torch.no_grad(), count_cuda_syncs() as logged:
                    model(**inputs)
                syncs = len(logged)
            selection = last_selection(model) if m.config is not None else None
            kept = selection.sent if selection else None  # tokens the LM receives, per image or video
            dropped = selection.temporal_dropped if selection else None  # per video, by the temporal stage
        finally:
            if m.config is not None:
                unprune_(model)
        rows[m.label] = {"method": m.label, "config": m.to_dict()["config"], "flops": flops, "peak_bytes": peak,
                         "kv_cache_bytes": kv, "kept_tokens": kept, "temporal_dropped": dropped,
                         "host_reads": len(reads), "cuda_syncs": syncs,
                         "prefill_s": [], "generate_s": [], "overhead_s": []}
    backend = (compile if isinstance(compile, str) else "inductor") if compile else None
    with compiled_language_model(model, backend):
        _time_all(run, all_methods, rows, warmup, repeats, progress)
    ref = rows["none"]
    ref_prefill = statistics.median(ref["prefill_s"])
    ref_generate = statistics.median(ref["generate_s"])
    results = []
    for m in all_methods:
        r = rows[m.label]
        prefill, generate = statistics.median(r["prefill_s"]), statistics.median(r["generate_s"])
        overhead = statistics.median(r["overhead_s"])
        flops_ratio = r["flops"] / ref["flops"]
        prefill_ratio = prefill / ref_prefill
        results.append({
            "method": m.label,
            "config": r["config"],
            "kept_tokens": r["kept_tokens"],
            "temporal_dropped": r["temporal_dropped"],
            "flops": r["flops"],
            "flops_ratio": flops_ratio,
            "prefill_latency_s": prefill,
            "prefill_latency_ratio": prefill_ratio,
            "generate_latency_s": generate,
            "generate_latency_ratio": generate / ref_generate,
            "overhead_s": overhead,
            "overhead_fraction": overhead / ref_generate,
            "overhead_fraction_prefill": overhead / ref_prefill,
            "efficiency": flops_ratio / prefill_ratio,
            "peak_memory_ratio": r["peak_bytes"] / ref["peak_bytes"] if ref["peak_bytes"] else None,
            "kv_cache_ratio": r["kv_cache_bytes"] / ref["kv_cache_bytes"] if ref["kv_cache_bytes"] else None,
            "host_reads_prefill": r["host_reads"],
            "cuda_syncs_prefill": r["cuda_syncs"],
        })
    setup = _setup(dev, dtype, repeats, warmup, new_tokens)
    setup["compiled_language_model"] = backend or False
    return {"geometry": geo.name, "description": geo.description, "visual_tokens": visual_tokens(model, inputs),
            "setup": setup, "results": results, "refused": [refused_row(m, refused[m.label]) for m in parsed
                                                         if m.label in refused]}


@contextmanager
def compiled_language_model(model, backend: str | None):
    """While active, the language model (``model.model.language_model``, or ``text_model``) runs
    under ``torch.compile(dynamic=True, backend=backend)``; nothing changes when ``backend`` is None."""
    if not backend:
        yield
        return
    inner = getattr(model, "model", None)
    name = next((n for n in ("language_model", "text_model") if isinstance(getattr(inner, n, None), nn.Module)), None)
    if name is None:
        raise UsageError(f"--compile compiles model.model.language_model (or text_model); {type(model).__name__} "
                         "has neither")
    eager_lm = getattr(inner, name)
    setattr(inner, name, torch.compile(eager_lm, dynamic=True, backend=backend))
    try:
        yield
    finally:
        setattr(inner, name, eager_lm)


def _time_all(run, methods: list[Method], rows: dict, warmup: int, repeats: int, progress) -> None:
    """Prefill then generate timings, methods interleaved run by run."""
    for what in ("prefill", "generate"):
        def told(i: int, warm: bool, what: str = what) -> None:
            if progress:
                progress(f"{what} round {i + 1}/{warmup + repeats}{' (warm-up)' if warm else ''}")

        calls = [lambda m=m: run(m, what) for m in methods]
        for m, runs in zip(methods, in_turns(calls, repeats, warmup, told)):
            rows[m.label][f"{what}_s"] = [seconds for seconds, _ in runs]
            if what == "prefill":
                rows[m.label]["overhead_s"] = [overhead for _, overhead in runs]


def _cpu_name() -> str:
    """The processor's model name (Linux), with its bf16 matrix units when it has them."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    units = [u for u in ("avx512_bf16", "amx_bf16") if u in flags]
    name = name or platform.processor() or platform.machine()
    return f"{name}, {platform.machine()}" + (f", {' '.join(units)}" if units else "")


def machine(device: torch.device, dtype: torch.dtype) -> dict:
    """Where a benchmark ran: device, processor, threads, dtype and the software versions."""
    import os

    import transformers

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _setup(device: torch.device, dtype: torch.dtype, repeats: int, warmup: int, new_tokens: int) -> dict:
    info = machine(device, dtype)
    info.update(repeats=repeats, warmup=warmup, new_tokens=new_tokens, batch_size=1)
    return info

