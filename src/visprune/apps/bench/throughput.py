"""``visprune bench --batch-sizes ...``: samples per second, pruned and unpruned, at the batch sizes
servers run, beside the physical limit, and against the two ways other tools prune.

For each batch size every method runs on the same batch as the unpruned model, methods (and their
variants) interleaved run by run, medians of ``repeats`` after ``warmup``. A batch's samples have
different images (plain to busy), so adaptive budgets (E-AdaPrune's ``energy``) give each sample
its own count: ragged per-sample budgets in one batch.

* ``throughput_ratio``: samples per second of end-to-end ``generate``, pruned / unpruned;
  ``prefill_throughput_ratio`` the same for the prefill alone.
* ``flops_limit = 1 / flops_ratio``: the speed-up the counted prefill FLOPs allow (the batch as it
  runs, padding counted); ``limit_share = prefill_throughput_ratio / flops_limit``.
* ``loop="bs1"``: the pruned model also fed the batch's samples one at a time, as the pruning
  toolkits evaluate (batch size 1); ``batched_over_loop`` is visprune's batched samples per second
  over the loop's. The samples keep the same counts alone (``same_kept_counts``).
* ``scoring="eager"``: the methods that read attention also run the way their official code reads
  it (:mod:`.eager`); ``qk_over_eager`` is the eager latency over visprune's (above 1: visprune is
  faster).
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch

from ...measure.flops import count_flops
from ...measure.memory import prefill_memory
from ...measure.timing import in_turns, timed
from ...methods import Method, parse_method
from ...transform import last_selection, prune_, unprune_
from ...scoring.scorers.llm_pruning import decoder_layers
from .eager import eager_scoring, reads_attention
from .geometries import Geometry, batch_inputs, build_geometry, clip_frames, visual_tokens
from .refusals import refused_row, split_refused
from .run import machine

LOOPS = (None, "bs1")
SCORINGS = ("qk", "eager")


@torch.no_grad()
def throughput(
    geometry: str | Geometry,
    methods: list[str] | tuple[str, ...],
    batch_sizes: tuple[int, ...] = (1, 4, 16),
    images: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    new_tokens: int = 32,
    loop: str | None = None,
    scoring: str = "qk",
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str], None] | None = print,
) -> dict:
    """Throughput at each of ``batch_sizes`` (``images`` images per prompt; a video geometry: clips of
    different lengths, :func:`~.geometries.video_inputs`); the JSON-ready report."""
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be integers >= 1, got {batch_sizes!r}")
    if loop not in LOOPS:
        raise ValueError(f"unknown loop {loop!r}; valid: bs1")
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; valid: {', '.join(SCORINGS)}")
    parsed = [parse_method(m) for m in methods if m != "none"]
    geo = geometry if isinstance(geometry, Geometry) else build_geometry(geometry, device, dtype)
    dev = next(geo.model.parameters()).device
    runnable, refused = split_refused(geo.model, parsed, geo.prune_processor)
    results = []
    for b in batch_sizes:
        if progress:
            progress(f"batch size {b}")
        results += _one_batch_size(geo, [Method("none", None), *runnable], b, images, repeats, warmup, new_tokens,
                                   loop, scoring, dev, progress)
    setup = machine(dev, dtype)
    setup.update(repeats=repeats, warmup=warmup, new_tokens=new_tokens, batch_sizes=list(batch_sizes),
                 images_per_prompt=images, loop=loop, scoring=scoring)
    if geo.frames is not None:  # a video geometry: the frames of each clip of the largest batch, in order
        setup["clip_frames"] = [clip_frames(geo.frames, j) for j in range(max(batch_sizes) * images)]
    return {"geometry": geo.name, "kind": "throughput", "description": geo.description, "setup": setup,
            "unit": "image" if geo.frames is None else "clip", "results": results, "refused": [refused_row(m, refused[m.label]) for m in parsed if m.label in refused]}


def _one_batch_size(geo: Geometry, methods: list[Method], b: int, images: int, repeats: int, warmup: int,
                    new_tokens: int, loop: str | None, scoring: str, dev, progress) -> list[dict]:
    model, processor = geo.model, geo.prune_processor
    inputs = batch_inputs(geo, b, images)
    singles = [batch_inputs(geo, b, images, only=i) for i in range(b)] if loop == "bs1" and b > 1 else []
    gen = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    depth = len(decoder_layers(model))
    eager = {m.label for m in methods
             if scoring == "eager" and m.config is not None and reads_attention(m.config, depth)}

    def call(method: Method, what: str, variant: str) -> tuple[float, float]:
        """Seconds of one prefill or generate of the batch (the loop: of its samples one by one)
        and visprune's overhead in it."""
        if method.config is not None:
            prune_(model, method.config, processor=processor)
        try:
            batches = singles if variant == "bs1" else [inputs]
            seconds, overhead = 0.0, 0.0
            for x in batches:
                if what == "prefill":
                    run = lambda x=x: model(**x)  # noqa: E731
                else:
                    run = lambda x=x: model.generate(**x, **gen)  # noqa: E731
                if variant == "eager":
                    with eager_scoring(model, method.config):
                        seconds += timed(run, dev)
                else:
                    seconds += timed(run, dev)
                if method.config is not None:
                    overhead += last_selection(model).overhead_seconds
        finally:
            if method.config is not None:
                unprune_(model)
        return seconds, overhead

    rows = {m.label: _measure(model, m, inputs, singles, dev, eager_too=m.label in eager, processor=processor)
            for m in methods}
    plan = [(m, "batch") for m in methods]
    plan += [(m, "bs1") for m in methods if singles and m.config is not None]
    plan += [(m, "eager") for m in methods if m.label in eager]
    for what in ("prefill", "generate"):
        def told(i: int, warm: bool, what: str = what) -> None:
            if progress:
                progress(f"  {what} round {i + 1}/{warmup + repeats}{' (warm-up)' if warm else ''}")

        calls = [lambda m=m, v=v: call(m, what, v) for m, v in plan]
        for (m, v), runs in zip(plan, in_turns(calls, repeats, warmup, told)):
            rows[m.label].setdefault(v, {})[f"{what}_s"] = statistics.median(s for s, _ in runs)
            if what == "prefill":
                rows[m.label][v]["overhead_s"] = statistics.median(o for _, o in runs)
    visual = (visual_tokens(model, inputs) or 0) / b
    return [dict(_row(rows[m.label], rows["none"], b, images), visual_tokens_per_sample=visual) for m in methods]


def _measure(model, method: Method, inputs: dict, singles: list[dict], dev, eager_too: bool,
             processor=None) -> dict:
    """The untimed figures of one method on one batch: FLOPs, memory, kept counts."""
    if method.config is not None:
        prune_(model, method.config, processor=processor)
    try:
        flops, _ = count_flops(model, **inputs)
        peak, kv = prefill_memory(model, inputs, dev)
        row = {"method": method.label, "config": method.to_dict()["config"], "flops": flops, "peak_bytes": peak,
               "kv_cache_bytes": kv, "kept_tokens": None, "temporal_dropped": None}
        if method.config is None:
            return row
        kept = last_selection(model).kept
        row["kept_tokens"] = last_selection(model).sent  # tokens the language model receives
        row["temporal_dropped"] = last_selection(model).temporal_dropped  # per video, by the temporal stage
        if singles:
            alone = []
            for x in singles:
                model(**x)
                alone += last_selection(model).sent
            row["same_kept_counts"] = alone == row["kept_tokens"]
        if eager_too:
            with eager_scoring(model, method.config) as maps:
                eager_peak, _ = prefill_memory(model, inputs, dev)
                kept_maps = len(maps)
            eager_kept = last_selection(model).kept
            row["eager_peak_bytes"] = eager_peak
            row["eager_maps"] = kept_maps
            row["eager_same_selection"] = all(torch.equal(a, c) for a, c in zip(kept, eager_kept))
        return row
    finally:
        if method.config is not None:
            unprune_(model)


def _row(r: dict, ref: dict, b: int, images: int) -> dict:
    batch, base = r["batch"], ref["batch"]
    flops_ratio = r["flops"] / ref["flops"]
    out = {
        "batch_size": b,
        "images_per_prompt": images,
        "method": r["method"],
        "config": r["config"],
        "kept_tokens": r["kept_tokens"],
        "temporal_dropped": r["temporal_dropped"],
        "flops": r["flops"],
        "flops_ratio": flops_ratio,
        "flops_limit": 1 / flops_ratio,
        "prefill_latency_s": batch["prefill_s"],
        "generate_latency_s": batch["generate_s"],
        "prefill_samples_per_s": b / batch["prefill_s"],
        "generate_samples_per_s": b / batch["generate_s"],
        "prefill_throughput_ratio": base["prefill_s"] / batch["prefill_s"],
        "throughput_ratio": base["generate_s"] / batch["generate_s"],
        "overhead_s": batch["overhead_s"],
        "overhead_fraction": batch["overhead_s"] / base["generate_s"],
        "peak_bytes": r["peak_bytes"],
        "peak_memory_ratio": r["peak_bytes"] / ref["peak_bytes"] if ref["peak_bytes"] else None,
        "kv_cache_ratio": r["kv_cache_bytes"] / ref["kv_cache_bytes"] if ref["kv_cache_bytes"] else None,
    }
    out["limit_share"] = out["prefill_throughput_ratio"] / out["flops_limit"]
    if "bs1" in r:
        loop = r["bs1"]
        out["loop_bs1"] = {
            "prefill_latency_s": loop["prefill_s"],
            "generate_latency_s": loop["generate_s"],
            "generate_samples_per_s": b / loop["generate_s"],
            "batched_over_loop": loop["generate_s"] / batch["generate_s"],
            "batched_over_loop_prefill": loop["prefill_s"] / batch["prefill_s"],
            "same_kept_counts": r["same_kept_counts"],
        }
    if "eager" in r:
        eager = r["eager"]
        out["eager_scoring"] = {
            "prefill_latency_s": eager["prefill_s"],
            "generate_latency_s": eager["generate_s"],
            "qk_over_eager": eager["generate_s"] / batch["generate_s"],
            "qk_over_eager_prefill": eager["prefill_s"] / batch["prefill_s"],
            "peak_memory_ratio": r["eager_peak_bytes"] / r["peak_bytes"] if r["peak_bytes"] else None,
            "maps_kept": r["eager_maps"],
            "same_selection": r["eager_same_selection"],
        }
    return out
