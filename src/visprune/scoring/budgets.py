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

    def parts(self, ctx: ScoreContext, k: torch.Tensor) -> torch.Tensor | None:
        """``[I, G]``: of each entry's ``k``, how many tokens each temporal group of a video keeps (rows
        summing to ``k``; an image row all in column 0), or None (default): one pool per entry."""
        return None

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


VIDEO_BUDGETS = ("clip-split", "clip", "frame")


@register_budget("energy")
class EnergyBudget(Budget):
    """E-AdaPrune (He & Chen, arXiv 2603.05950): ``k`` from the singular-value spectrum.

    ``k`` is the smallest count whose top squared singular values hold ``PruneConfig.energy`` of
    the spectral energy of the image's visual tokens, clamped to ``[min_keep, max_keep]``.
    Choices the paper does not publish, made here: the matrix is the *projected* tokens (what the
    language model receives), candidates only (no [CLS] / newline tokens), not centred; the
    spectrum comes from exact Gram-matrix eigenvalues (:func:`visprune.ops.energy_budget`).

    Videos (entries with temporal groups, ``ScoreContext.groups``), by ``PruneConfig.video_budget``:

    - ``"clip-split"`` (default): ``k`` as above over all the clip's candidates, then divided among its
      temporal groups in proportion to each group's own energy, the squared Frobenius norm of the
      group's candidate tokens (the sum of its squared singular values), not centred: the clip's
      matrix is its groups' rows stacked, so the groups' energies add up exactly to the clip's
      spectral energy, the quantity ``k`` was read from (centred energies would not add up, and a
      group's mean is content too). Parts are rounded by largest remainders to sum to ``k``, each at
      most its group's candidates (:func:`visprune.ops.apportion`); each group keeps its part of its
      own top-scoring tokens.
    - ``"clip"``: one pool over the whole clip (the scorer's top ``k`` anywhere in it).
    - ``"frame"``: each group's own energy budget, as if it were an image (``min_keep`` / ``max_keep``
      clamp each group); the clip keeps their sum.
    """

    def __call__(self, ctx: ScoreContext, scores: torch.Tensor) -> torch.Tensor:
        k = self._clamp(ops.energy_budget(ctx.features, ctx.config.energy, valid=ctx.candidates), ctx.config)
        counts = ctx.counts.to(k.device, torch.int64)
        if _mode(ctx) == "frame" and ctx.groups is not None:
            per = self._frame(ctx)
            k = torch.where(_video_rows(ctx).to(k.device), per.sum(-1).to(k.device), k)
        return torch.minimum(k, counts)

    def parts(self, ctx: ScoreContext, k: torch.Tensor) -> torch.Tensor | None:
        mode = _mode(ctx)
        if ctx.groups is None or mode == "clip":
            return None
        video = _video_rows(ctx)
        if mode == "frame":
            per = self._frame(ctx).to(k.device)
        else:
            cand = ctx.candidates
            gid = ctx.groups.clamp_min(0)
            g = int(ctx.groups.max()) + 1
            energy = (ctx.features.detach().to(torch.float64) ** 2).sum(-1) * cand
            weights = torch.zeros(cand.shape[0], g, dtype=torch.float64, device=cand.device).scatter_add_(1, gid, energy)
            caps = torch.zeros(cand.shape[0], g, dtype=torch.int64, device=cand.device).scatter_add_(
                1, gid, cand.to(torch.int64))
            rows = [ops.apportion(kk, w, c) for kk, w, c in zip(k.tolist(), weights.tolist(), caps.tolist())]
            per = torch.tensor(rows, dtype=torch.int64, device=k.device)
        image = torch.zeros_like(per)
        image[:, 0] = k
        return torch.where(video.to(k.device).unsqueeze(-1), per, image)

    @staticmethod
    def _clamp(k: torch.Tensor, cfg: Any) -> torch.Tensor:
        k = k.to(torch.int64).clamp(min=int(cfg.min_keep))
        return k if cfg.max_keep is None else k.clamp(max=int(cfg.max_keep))

    def _frame(self, ctx: ScoreContext) -> torch.Tensor:
        """``[I, G]`` each group's own energy budget (0 for groups without candidates and image rows)."""
        cached = ctx.extras.get("_frame_energy_budgets")
        if cached is not None:
            return cached
        cand, groups = ctx.candidates, ctx.groups
        g = int(groups.max()) + 1
        masks = [(cand[i] & (groups[i] == j)) for i in range(cand.shape[0]) for j in range(g)]
        tokens = [ctx.features[i // g][m] for i, m in enumerate(masks)]
        feats, valid = ops.pad_ragged(tokens)
        if feats.shape[1] == 0:
            per = torch.zeros(len(masks), dtype=torch.int64, device=cand.device)
        else:
            per = self._clamp(ops.energy_budget(feats, ctx.config.energy, valid=valid), ctx.config)
        counts = torch.stack([m.sum() for m in masks]).to(per.device)
        per = torch.minimum(per, counts).reshape(cand.shape[0], g)
        ctx.extras["_frame_energy_budgets"] = per
        return per


def _mode(ctx: ScoreContext) -> str:
    return getattr(ctx.config, "video_budget", None) or VIDEO_BUDGETS[0]


def _video_rows(ctx: ScoreContext) -> torch.Tensor:
    return (ctx.groups >= 0).any(-1)


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
