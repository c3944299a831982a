"""``random``: seeded random selection, the baseline that every method must beat."""

from __future__ import annotations

import torch

from ..context import IMAGE_KEY, ScoreContext
from .base import Scorer, register_scorer


@register_scorer("random")
class RandomScorer(Scorer):
    """Uniform random scores, seeded by ``PruneConfig.seed`` and a hash of each image's pixels.

    The same image gets the same selection whatever batch it is in, and different images get
    different selections.
    """

    needs = frozenset({IMAGE_KEY})

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        keys = ctx.require(IMAGE_KEY, "scorer 'random'")
        n = ctx.features.shape[1]
        rows = []
        for key in keys:
            g = torch.Generator().manual_seed((int(ctx.config.seed) * 1_000_003 + int(key)) % (2**63 - 1))
            rows.append(torch.rand(n, generator=g))
        return torch.stack(rows).to(ctx.features.device)
