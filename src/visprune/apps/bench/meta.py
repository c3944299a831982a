"""LLaVA-1.5-7B's FLOPs at real size, counted on the ``meta`` device (no weights, no timings)."""

from __future__ import annotations

import torch

from ... import ops
from ...methods import QUICK_METHODS, parse_method
from .geometries import llava_7b_config


@torch.no_grad()
def bench_meta(methods: list[str] | tuple[str, ...] = QUICK_METHODS, text_tokens: int = 40) -> dict:
    """FLOPs at LLaVA-1.5-7B's real size, counted on the ``meta`` device (no weights, no timings).

    The pruning code reads values, which meta tensors do not have, so each method's FLOPs are
    counted on the stock model at the size the pruned model really runs: the full vision tower and
    projector, then the language-model prefill with ``k`` image tokens. Budgets that depend on the
    image (``energy``, ``iqr``) cannot be sized without weights and are reported as null.
    """
    from transformers import LlavaForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from ...measure.flops import count_flops_by_module

    cfg = llava_7b_config()
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(cfg).eval()
    n = (336 // 14) ** 2
    pixels = torch.empty(1, 3, 336, 336, device="meta")
    vision, _ = count_flops_by_module(model.model.get_image_features, pixel_values=pixels)

    def lm_flops(k: int) -> int:
        ids = torch.tensor([[1] * (text_tokens // 2) + [cfg.image_token_id] * k + [2] * (text_tokens - text_tokens // 2)])
        feats = torch.empty(k, cfg.text_config.hidden_size, device="meta")
        enc = {"image": BaseModelOutputWithPooling(pooler_output=[feats])}
        counts, _ = count_flops_by_module(model, input_ids=ids, mm_encoder_outputs=enc)
        return counts["total"]

    full = vision["total"] + lm_flops(n)
    results = [{"method": "none", "kept_tokens": [n], "flops": full, "flops_ratio": 1.0}]
    for spec in methods:
        m = parse_method(spec)
        if m.config is None:
            continue
        budget = m.config.budget_name
        if budget == "ratio":
            k = int(ops.ratio_budget(n, m.config.keep))
        elif budget == "fixed":
            k = min(m.config.k, n)
        else:
            results.append({"method": m.label, "kept_tokens": None, "flops": None, "flops_ratio": None,
                            "note": f"budget {budget!r} depends on the image; not sized on the meta device"})
            continue
        f = vision["total"] + lm_flops(k)
        results.append({"method": m.label, "kept_tokens": [k], "flops": f, "flops_ratio": f / full})
    return {
        "geometry": "llava-1.5-7b",
        "description": "LLaVA-1.5-7B shapes on the meta device: CLIP ViT-L/14-336 (576 tokens) + Vicuna-7B, "
        f"{text_tokens} text tokens; FLOPs counted per module, no weights (timings at real size: "
        "`--device cpu` or `--device cuda`)",
        "vision_flops": vision["total"],
        "results": results,
    }
