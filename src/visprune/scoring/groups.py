"""Selections made within each temporal group of a video: a video's budget split over its groups.

Where the budget splits a video's ``k`` over its temporal groups (frame pairs on the Qwen-VL family,
frames on LLaVA-OneVision / NeXT-Video; :meth:`~visprune.scoring.budgets.Budget.parts`, the energy
budget's ``video_budget``), ``decide`` hands the split to a scorer's own selection as ``ctx.parts``;
scorers that choose a set (DivPrune, CDPruner, VisPruner, VisionZip's projected variant, pooling) then
choose each group's part among that group's tokens, as top-``k`` scorers do.
"""

from __future__ import annotations

import torch

from .. import ops
from .context import ScoreContext


def group_split(ctx: ScoreContext, i: int) -> list[tuple[torch.Tensor, int]] | None:
    """Entry ``i``'s temporal groups as ``(candidate mask [N], tokens to keep)`` pairs, in group order,
    groups with nothing to keep left out; None where the budget made no split (``ctx.parts`` None) or
    entry ``i`` is not a video."""
    if ctx.parts is None or ctx.groups is None:
        return None
    groups = ctx.groups[i]
    if not bool((groups >= 0).any()):
        return None
    cand = ctx.candidates[i]
    groups = groups.to(cand.device)
    return [(cand & (groups == g), int(share)) for g, share in enumerate(ctx.parts[i].tolist()) if share > 0]


def group_shares(ctx: ScoreContext, i: int, k: int) -> list[int]:
    """Of video entry ``i``'s ``k`` (a grid of ``ctx.thw[i]``), what each of its temporal groups keeps: the
    budget's split where it makes one (``ctx.parts``), else ``k`` shared evenly
    (:func:`visprune.ops.apportion`, equal weights, each group capped at its candidates)."""
    t = ctx.thw[i][0]
    if ctx.parts is not None:
        return [int(x) for x in ctx.parts[i, :t].tolist()]
    gid = ctx.groups[i].masked_fill(~ctx.candidates[i].to(ctx.groups.device), -1)
    caps = torch.bincount(gid[gid >= 0].cpu(), minlength=t).tolist()[:t]
    return ops.apportion(int(k), [1.0] * t, caps)
