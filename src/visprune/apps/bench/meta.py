"""The real-size geometries' FLOPs counted on the ``meta`` device (no weights, no timings)."""

from __future__ import annotations

import torch

from ... import ops
from ...adapters.llava import counts_7b
from ...adapters.qwen2_vl import qwen2_5_vl_7b_video_counts
from ...measure.savings import TEXT_TOKENS, Counts
from ...methods import QUICK_METHODS, parse_method

#: each real-size geometry's counts (the same as its row of docs/savings.md) and its description
META_GEOMETRIES = {
    "llava-1.5-7b": (counts_7b, "LLaVA-1.5-7B shapes on the meta device: CLIP ViT-L/14-336 (576 tokens) + Vicuna-7B"),
    "qwen2.5-vl-7b-video": (qwen2_5_vl_7b_video_counts,
                            "Qwen2.5-VL-7B shapes on the meta device: a 32-frame 448 x 448 clip (16 temporal patches "
                            "x 16 x 16 = 4,096 merged video tokens), its 32-block window-attention tower + Qwen2.5-7B"),
}


@torch.no_grad()
def bench_meta(methods: list[str] | tuple[str, ...] = QUICK_METHODS, geometry: str = "llava-1.5-7b",
               tiny: bool = False) -> dict:
    """FLOPs of ``geometry`` at its real size, counted on the ``meta`` device (no weights, no timings).

    The pruning code reads values, which meta tensors do not have, so each method's FLOPs are
    counted on the stock modules at the sizes the pruned model really runs (the adapter's counts,
    :class:`visprune.measure.savings.Counts`, as ``docs/savings.md`` counts them): the full vision
    tower and projector, then the language-model prefill (decoder stack over the prompt, the head on
    its last position) with ``k`` visual tokens; ``kv_cache_ratio``: the prompt's length over the
    unpruned one's (every layer caches every position). Budgets that depend on the image (``energy``,
    ``iqr``) and the temporal stage (which drops what repeats across frames) cannot be sized
    without weights and are reported as null. ``tiny``: the adapter's shrunk shapes (tests)."""
    if geometry not in META_GEOMETRIES:
        raise ValueError(f"no meta-device count for {geometry!r}; valid: {', '.join(META_GEOMETRIES)}")
    count, description = META_GEOMETRIES[geometry]
    c: Counts = count(tiny)
    full = c.total(c.n)
    results = [{"method": "none", "kept_tokens": [c.n], "flops": full, "flops_ratio": 1.0, "kv_cache_ratio": 1.0}]
    for spec in methods:
        m = parse_method(spec)
        if m.config is None:
            continue
        budget = m.config.budget_name
        note = None
        if getattr(m.config, "temporal", None) is not None:
            note = "the temporal stage depends on the frames; not sized on the meta device"
        elif budget == "ratio":
            k = int(ops.ratio_budget(c.n, m.config.keep))
        elif budget == "fixed":
            k = min(m.config.k, c.n)
        else:
            note = f"budget {budget!r} depends on the image; not sized on the meta device"
        if note:
            results.append({"method": m.label, "kept_tokens": None, "flops": None, "flops_ratio": None,
                            "kv_cache_ratio": None, "note": note})
            continue
        f = c.total(k)
        # every layer caches every position of the prompt: the cache shrinks as the prompt does
        results.append({"method": m.label, "kept_tokens": [k], "flops": f, "flops_ratio": f / full,
                        "kv_cache_ratio": (TEXT_TOKENS + k) / (TEXT_TOKENS + c.n)})
    return {
        "geometry": geometry,
        "description": f"{description}, {TEXT_TOKENS} text tokens; FLOPs counted per module, no weights, as "
        "docs/savings.md counts them (timings at real size: `--device cpu` or `--device cuda`)",
        "vision_flops": c.vision + c.connector,
        "results": results,
    }
