"""Cheap context remedies around any scorer: a few spatially uniform tokens, one summary token."""

from __future__ import annotations

from typing import Any

import torch

from ..context import ScoreContext
from .base import SCORERS, Scorer


class WithContextTokens(Scorer):
    """``base``'s selection with part of the budget spent on context, the remedies the field uses for
    what pruning loses outside the top-scored tokens (measured on count questions in docs/counting.md):

    - ``uniform=u``: ``u`` of each image's ``k`` tokens are spatially uniform samples, every
      ``n / u``-th of the candidates the scorer did not pick, in raster order (PruMerge+'s added
      samples, arXiv 2403.15388 Sec. 3.3);
    - ``summary=True``: one of the ``k`` tokens summarises every dropped token: the dropped token
      the scorer ranks highest carries the mean of all dropped tokens (VisionZip's contextual token
      with a single target, arXiv 2412.04467 Sec. 3.2, in the language model's input space).

    The rest, ``k - u - summary`` tokens, are ``base``'s top scores. Not registered: build it in
    Python, ``PruneConfig(scorer=WithContextTokens("atp", uniform=8), k=64)``.
    """

    def __init__(self, base: str | Scorer = "atp", uniform: int = 0, summary: bool = False) -> None:
        if isinstance(uniform, bool) or not isinstance(uniform, int) or uniform < 0:
            raise ValueError(f"uniform must be an integer >= 0 (tokens spent on uniform samples), got {uniform!r}")
        if not isinstance(summary, bool):
            raise ValueError(f"summary must be True or False, got {summary!r}")
        self.base = SCORERS.get(base)() if isinstance(base, str) else base
        if getattr(self.base, "in_llm", False) or type(self.base).select is not Scorer.select \
                or type(self.base).merge is not Scorer.merge:
            raise TypeError(f"WithContextTokens needs a top-k scorer, not {type(self.base).__name__}, which selects "
                            "or merges by itself")
        self.uniform, self.summary = uniform, summary
        self.name = f"{self.base.name}+context"

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return self.base.needs

    @property
    def relevance_source(self) -> str | None:  # type: ignore[override]
        return self.base.relevance_source

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        self.base.setup(model, config, processor)

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return self.base(ctx)

    def _split(self, ctx: ScoreContext, scores: torch.Tensor, i: int, k: int):
        """(top-scored, uniform, summary slot or None) candidate indices of image ``i``."""
        cand = ctx.candidates[i]
        n_sum = int(self.summary and k > 1 and int(cand.sum()) > k)  # a summary needs something dropped
        n_uni = min(self.uniform, k - n_sum - 1) if k > 1 else 0
        masked = torch.where(cand, scores[i].float(), torch.full_like(scores[i], float("-inf"), dtype=torch.float))
        order = torch.sort(masked, descending=True, stable=True).indices[: int(cand.sum())]
        top = order[: k - n_uni - n_sum]
        rest = torch.sort(order[k - n_uni - n_sum :]).values  # raster order
        uniform = rest[torch.linspace(0, len(rest) - 1, n_uni, device=rest.device).round().long()] if n_uni else rest[:0]
        slot = None
        if n_sum:
            left = order[k - n_uni - n_sum :]
            left = left[~torch.isin(left, uniform)]
            slot = left[0]  # the dropped token ranked highest
        return top, uniform, slot

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        out, slots = [], []
        for i in range(len(k)):
            top, uniform, slot = self._split(ctx, scores, i, int(k[i]))
            parts = [top, uniform] + ([slot.view(1)] if slot is not None else [])
            out.append(torch.sort(torch.cat(parts)).values)
            slots.append(slot)
        ctx.extras["summary_slots"] = slots  # per call: merge reads them instead of scoring again
        return out

    def merge(self, ctx: ScoreContext, kept: list[torch.Tensor]) -> list[torch.Tensor] | None:
        if not self.summary:
            return None
        out = []
        for i, (idx, slot) in enumerate(zip(kept, ctx.extras["summary_slots"])):
            feats = ctx.features[i, idx].clone()
            if slot is not None:
                dropped = ctx.candidates[i].clone()
                dropped[idx] = False
                dropped[slot] = True
                feats[torch.searchsorted(idx, slot.view(1))] = ctx.features[i][dropped].float().mean(0).to(feats.dtype)
            out.append(feats)
        return out

    def __repr__(self) -> str:
        return f"WithContextTokens({self.base!r}, uniform={self.uniform}, summary={self.summary})"
