"""Scores, budget and selection together: the kept indices of each image (and merged features)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import ops
from .context import ScoreContext
from .scorers.base import Scorer


def decide(scorer: Any, budget: Any, ctx: ScoreContext, scores: torch.Tensor) -> tuple[list[torch.Tensor], Any]:
    """Budget, selection and merging for given scores: (kept indices per image, merged features or None).

    For scorers that keep the top-``k`` of their scores (the default :meth:`Scorer.select`) the
    whole decision stays on the device and reads one small tensor back to the host, the kept
    count of each image, however many images the call has. Scorers with their own selection
    (DivPrune, pooling, VisionZip) get ``k`` on the host.

    Where the budget splits a video's ``k`` over its temporal groups (:meth:`Budget.parts`: the energy
    budget's ``video_budget="clip-split"`` / ``"frame"``), top-``k`` scorers pick each group's share among
    that group's tokens; scorers with their own selection get the video's total ``k`` and the split as
    ``ctx.parts``, and choose each group's share among its tokens (:mod:`visprune.scoring.groups`).
    """
    if scores.shape != ctx.valid.shape:
        raise RuntimeError(f"scorer returned shape {tuple(scores.shape)}, expected {tuple(ctx.valid.shape)}")
    counts = ctx.counts
    k = torch.minimum(budget(ctx, scores).to(counts.device, torch.int64), counts.to(torch.int64))
    # per temporal group of a video, what each keeps of its entry's k (Budget.parts), or None: one pool
    parts = budget.parts(ctx, k) if hasattr(budget, "parts") else None
    if type(scorer).select is Scorer.select:
        masked = torch.where(ctx.candidates, scores.float(), torch.full_like(scores, -math.inf, dtype=torch.float))
        if parts is None:
            keep = ops.topk_mask(masked, k)
        else:  # image rows: all of k in "group 0", their tokens all in group 0
            keep = ops.topk_mask_grouped(masked, ctx.groups.clamp_min(0).to(masked.device), parts)
    else:
        ctx.parts = parts.cpu() if parts is not None else None
        keep = torch.zeros_like(ctx.valid)
        for i, idx in enumerate(scorer.select(ctx, scores, k.cpu())):
            keep[i, idx.to(keep.device)] = True
        if ctx.repeats is not None:  # a scorer's own selection may not read candidates: repeats stay dropped
            keep &= ~ctx.repeats.to(keep.device)
    keep = keep | ctx.protected
    kept = ops.mask_indices(keep, keep.sum(-1).tolist())  # the one read-back
    return kept, scorer.merge(ctx, kept)
