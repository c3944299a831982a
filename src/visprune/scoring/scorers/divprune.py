"""``divprune``: max-min diversity selection of the projected visual tokens."""

from __future__ import annotations

import torch

from ..context import ScoreContext
from ..groups import group_split
from .base import Scorer, register_scorer


@register_scorer("divprune")
class DivPruneScorer(Scorer):
    """DivPrune (Alvar et al., CVPR 2025, arXiv 2503.02175), Sec. 3: a Max-Min Diversity Problem.

    Distances are ``1 - cosine similarity`` between the projected visual tokens (the language
    model's input, as in the paper's LLaVA set-up). Greedy solution as in the paper's Algorithm 1:
    the first token is the one farthest from its nearest neighbour; each next token is the
    candidate whose minimum distance to the tokens chosen so far is largest. Ties go to the lower
    index. The selection depends on ``k`` only through its length (it is a greedy order), so a
    batch with per-image budgets is one pass over the largest ``k``.

    ``__call__`` returns each token's nearest-neighbour distance (a diversity score, for pictures
    and budgets such as ``iqr``); the selection itself is :meth:`select`. A video whose budget splits it
    over temporal groups (``ctx.parts``, the energy budget's ``video_budget``) is chosen group by group,
    each group's part among its own tokens (:func:`~visprune.scoring.groups.group_split`).
    """

    needs = frozenset()

    def _distances(self, ctx: ScoreContext) -> torch.Tensor:
        f = torch.nn.functional.normalize(torch.nan_to_num(ctx.features.float(), nan=0.0), dim=-1)
        return 1.0 - f @ f.transpose(1, 2)  # [I, N, N]

    @staticmethod
    def _nearest(d: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` each token's distance to its nearest other candidate (0 where it has none)."""
        d = d.masked_fill(~cand[:, None, :], float("inf"))
        d.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        nn_dist = d.amin(-1)
        return torch.where(torch.isfinite(nn_dist), nn_dist, torch.zeros_like(nn_dist))

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return self._nearest(self._distances(ctx), ctx.candidates)

    @classmethod
    def _greedy(cls, d: torch.Tensor, cand: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        """Algorithm 1 on ``B`` rows at once: ``k[b]`` of row ``b``'s candidates, ascending."""
        i_idx = torch.arange(d.shape[0], device=d.device)
        first_score = torch.where(cand, cls._nearest(d, cand), torch.full_like(cand, -1.0, dtype=torch.float))
        kmax = int(k.max()) if len(k) else 0
        order = torch.empty(d.shape[0], kmax, dtype=torch.long, device=d.device)
        available = cand.clone()
        min_dist = None
        for step in range(kmax):
            if step == 0:
                crit = first_score
            else:
                crit = torch.where(available, min_dist, torch.full_like(min_dist, -1.0))
            pick = crit.argmax(-1)  # argmax returns the first (lowest) index among ties
            order[:, step] = pick
            available[i_idx, pick] = False
            row = d[i_idx, pick]
            min_dist = row if min_dist is None else torch.minimum(min_dist, row)
        return [torch.sort(order[i, : int(k[i])]).values for i in range(len(k))]

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        """One greedy pass over the batch; a video whose budget splits it over its temporal groups
        (``ctx.parts``) runs one pass per group on the group's own distances, with the group's part."""
        d = self._distances(ctx)
        splits = [group_split(ctx, i) for i in range(len(k))]
        plain = torch.tensor([s is None for s in splits], device=k.device)
        kept = self._greedy(d, ctx.candidates, torch.where(plain, k, torch.zeros_like(k)))
        for i, split in enumerate(splits):
            if split is None:
                continue
            picks = []
            for mask, share in split:
                idx = mask.nonzero(as_tuple=True)[0]
                sub = d[i][idx][:, idx][None]
                picks.append(idx[self._greedy(sub, torch.ones_like(sub[:, 0], dtype=torch.bool), torch.tensor([share]))[0]])
            kept[i] = torch.sort(torch.cat(picks)).values if picks else kept[i]
        return kept
