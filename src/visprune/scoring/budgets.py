"""Budgets: how many candidate tokens each image keeps, ``(ctx, scores) -> k [I]``."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from .. import ops
from .context import ScoreContext
from ..registry import Registry


class Budget:
    """Maps a :class:`ScoreContext` (and the scores) to a per-image count ``k [I]``.

    ``k`` counts candidate tokens only; protected tokens are kept on top of it. A ``k`` above the
    number of candidates keeps them all.
    """

    name: ClassVar[str] = ""

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        """Called once by ``prune_``."""

    def __call__(self, ctx: ScoreContext, scores: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


BUDGETS: Registry[Budget] = Registry("budget")
register_budget = BUDGETS.register


@register_budget("fixed")
class FixedBudget(Budget):
    """The same ``k`` (``PruneConfig.k``) for every image, capped at its token count."""

    def __call__(self, ctx: ScoreContext, scores: torch.Tensor) -> torch.Tensor:
        counts = ctx.counts.to(torch.int64)
        return counts.clamp(max=int(ctx.config.k))


@register_budget("ratio")
class RatioBudget(Budget):
    """``round(keep * n)`` of each image's ``n`` candidate tokens (``PruneConfig.keep``)."""

    def __call__(self, ctx: ScoreContext, scores: torch.Tensor) -> torch.Tensor:
        return ops.ratio_budget(ctx.counts, ctx.config.keep)


@register_budget("energy")
class EnergyBudget(Budget):
    """E-AdaPrune (He & Chen, arXiv 2603.05950): ``k`` from the singular-value spectrum.

    ``k`` is the smallest count whose top squared singular values hold ``PruneConfig.energy`` of
    the spectral energy of the image's visual tokens, clamped to ``[min_keep, max_keep]``.
    Choices the paper does not publish, made here: the matrix is the *projected* tokens (what the
    language model receives), candidates only (no [CLS] / newline tokens), not centred; the
    spectrum comes from exact Gram-matrix eigenvalues (:func:`visprune.ops.energy_budget`).
    """

    def __call__(self, ctx: ScoreContext, scores: torch.Tensor) -> torch.Tensor:
        cfg = ctx.config
        k = ops.energy_budget(ctx.features, cfg.energy, valid=ctx.candidates).to(torch.int64)
        k = k.clamp(min=int(cfg.min_keep))
        if cfg.max_keep is not None:
            k = k.clamp(max=int(cfg.max_keep))
        return torch.minimum(k, ctx.counts.to(k.device, torch.int64))


@register_budget("iqr")
class IqrBudget(Budget):
    """The PruMerge / TRIM outlier rule: keep the tokens scoring above ``Q3 + 1.5 * IQR``.

    PruMerge (Shang et al., arXiv 2403.15388, Sec. 3.2) applies it to [CLS] attention, TRIM (Song
    et al., arXiv 2409.10994, Sec. 3) to CLIP similarity; here it applies to whatever the scorer
    returns, per image over its candidate tokens (never over the whole batch). Quartiles use
    linear interpolation (``torch.quantile``). At least ``min_keep`` tokens are kept.
    """

    def __call__(self, ctx: ScoreContext, scores: torch.Tensor) -> torch.Tensor:
        s = torch.where(ctx.candidates, scores.float(), torch.full_like(scores, math.nan, dtype=torch.float))
        q1, q3 = torch.nanquantile(s, torch.linspace(0.25, 0.75, 2, device=s.device), dim=-1)  # all images
        k = (s > (q3 + 1.5 * (q3 - q1)).unsqueeze(-1)).sum(-1).clamp(min=int(ctx.config.min_keep))  # NaN > x is False
        if ctx.config.max_keep is not None:
            k = k.clamp(max=int(ctx.config.max_keep))
        return torch.minimum(k, ctx.counts.to(torch.int64))
