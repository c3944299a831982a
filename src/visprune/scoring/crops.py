"""Selections made crop by crop: an image's budget split over its any-resolution crops.

CDPruner's and VisPruner's official code on LLaVA-NeXT (``llava/model/llava_arch.py``,
``prepare_inputs_labels_for_multimodal``) runs ``encode_images`` on the base image and every crop
as a batch of separate pictures, each keeping ``visual_token_num`` tokens: the published
LLaVA-NeXT budgets are "32 * 5 = 160", 32 in each of five crops. Here an image's budget ``k`` is
split evenly over its crops the same way, and each crop's share is chosen among its own tokens.
"""

from __future__ import annotations

import torch

from .. import ops
from .context import ScoreContext


def crop_budgets(k: int, sizes: list[int]) -> list[int]:
    """Tokens each crop keeps of an image's ``k``: an even split (:func:`visprune.ops.apportion` with equal
    weights, the one home of budget splits): ``k // n`` each, the remainder one each to the first crops (the
    base image first); a crop with fewer tokens than its share keeps them all and the others share the rest
    evenly again. ``k`` is at most ``sum(sizes)``."""
    return ops.apportion(k, [1.0] * len(sizes), sizes)


def crop_split(ctx: ScoreContext, i: int, k: int) -> list[tuple[torch.Tensor, int]] | None:
    """Image ``i``'s crops as ``(candidate mask [N], tokens to keep)`` pairs, in crop order, or None
    where the adapter does not tell crops apart (``ctx.crops``) or the image is one crop."""
    if ctx.crops is None:
        return None
    cand = ctx.candidates[i]
    crop = ctx.crops[i].to(cand.device)
    numbers = torch.unique(crop[cand]).tolist()
    if len(numbers) < 2:
        return None
    masks = [cand & (crop == c) for c in numbers]
    shares = crop_budgets(k, [int(m.sum()) for m in masks])
    return list(zip(masks, shares))
