"""``pool``: plain spatial average pooling of the patch grid, the baseline that beats many methods."""

from __future__ import annotations


from typing import Any

import torch
import torch.nn.functional as F

from ..context import ScoreContext
from ..groups import group_shares
from .base import Scorer, register_scorer


def pool_shape(rows: int, cols: int, k: int) -> tuple[int, int]:
    """Output grid ``(r, c)`` with ``r * c <= k`` as large as possible, closest to the input's aspect."""
    best = (1, 1)
    best_key = (-1, 0.0)
    for r in range(1, rows + 1):
        c = min(cols, k // r)
        if c < 1:
            break
        aspect = abs((r / c) - (rows / cols))
        key = (r * c, -aspect)
        if key > best_key:
            best, best_key = (r, c), key
    return best


def _cells(n_in: int, n_out: int) -> list[tuple[int, int]]:
    # The windows of adaptive average pooling (torch's rule): [floor(i*n/m), ceil((i+1)*n/m)).
    return [((i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)) for i in range(n_out)]


@register_scorer("pool")
class PoolScorer(Scorer):
    """Average-pool the ``rows x cols`` patch grid to ``r x c <= k`` tokens (adaptive pooling).

    Each output token is the mean of its window of projected visual tokens and takes the place of
    the window's centre patch, which is what :func:`visprune.last_kept` reports. The grid is chosen
    with ``r * c`` as close to the budget as possible (``k=64`` on 24 x 24: 8 x 8; ``k=32`` on
    16 x 16: 4 x 8), so a pooled run may keep slightly fewer than ``k`` tokens. Pooling is done on
    the features the language model receives (after the projector), as plain-pooling baselines in
    independent benchmarks do. Needs one patch grid per image: LLaVA-1.5 layout, not the packed
    any-resolution features of LLaVA-NeXT / OneVision.

    A video (an entry with a token grid ``(t, h, w)``, ``ScoreContext.thw``) is pooled within each temporal
    group (a frame pair after Qwen's merger, a frame on LLaVA-OneVision / NeXT-Video), never across
    groups: its ``k`` is split over the groups as the budget splits it (``Budget.parts``, the energy
    budget's ``video_budget``) or else evenly, and each group's ``h x w`` grid is pooled to its share.
    Not with the temporal stage (``temporal``), which leaves holes in the grids.
    """

    needs = frozenset()
    needs_grid = True  # refused by adapters whose images are not one grid each (Adapter.one_grid)

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        if getattr(config, "temporal", None) is not None:
            raise TypeError("scorer 'pool' averages whole frame grids, and the temporal stage drops single tokens "
                            "from them: leave temporal=None with pool")

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return torch.zeros(ctx.features.shape[:2], device=ctx.features.device)

    def _blocks(self, ctx: ScoreContext, i: int) -> list[tuple[torch.Tensor, tuple[int, int]]]:
        """The grids entry ``i`` pools, each as (its candidate token indices in row-major order, (rows, cols)):
        the image's one grid, or each temporal group of a video."""
        thw = ctx.thw[i] if ctx.thw is not None else None
        if thw is not None:
            t, h, w = thw
            device = ctx.features.device
            return [(torch.arange(g * h * w, (g + 1) * h * w, device=device), (h, w)) for g in range(t)]
        if ctx.grids is None or ctx.grids[i] is None:
            raise ValueError("scorer 'pool' needs the patch grid of each image, which this adapter does not provide")
        return [(ctx.candidates[i].nonzero(as_tuple=True)[0], ctx.grids[i])]

    @staticmethod
    def _centres(cand: torch.Tensor, rows: int, cols: int, k: int) -> tuple[tuple[int, int], torch.Tensor]:
        """(pooled grid, window centres as token indices, row-major like the pooled grid)."""
        r, c = pool_shape(rows, cols, max(int(k), 1))
        mid_r = torch.tensor([(r0 + r1 - 1) // 2 for r0, r1 in _cells(rows, r)], device=cand.device)
        mid_c = torch.tensor([(c0 + c1 - 1) // 2 for c0, c1 in _cells(cols, c)], device=cand.device)
        return (r, c), cand[(mid_r[:, None] * cols + mid_c[None, :]).reshape(-1)]

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i in range(len(k)):
            blocks = self._blocks(ctx, i)
            if ctx.thw is not None and ctx.thw[i] is not None:  # a video: each group pooled to its share
                picked = [self._centres(cand, *grid, share)[1]
                          for (cand, grid), share in zip(blocks, group_shares(ctx, i, int(k[i]))) if share > 0]
                out.append(torch.cat(picked) if picked else blocks[0][0][:0])
            else:
                (cand, grid), = blocks
                out.append(self._centres(cand, *grid, int(k[i]))[1])
        return out

    def merge(self, ctx: ScoreContext, kept: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, idx in enumerate(kept):
            feats = ctx.features[i, idx].clone()
            for cand, (rows, cols) in self._blocks(ctx, i):
                n = int(((idx >= cand[0]) & (idx <= cand[-1]) & ctx.candidates[i, idx]).sum())  # this grid's kept
                if n == 0:
                    continue
                (r, c), centres = self._centres(cand, rows, cols, n)
                grid = ctx.features[i, cand].reshape(rows, cols, -1).permute(2, 0, 1)  # [H, rows, cols]
                pooled = F.adaptive_avg_pool2d(grid.unsqueeze(0), (r, c))[0].flatten(1).T  # [r * c, H]
                feats[torch.searchsorted(idx, centres)] = pooled.to(feats.dtype)  # idx is ascending
            out.append(feats)
        return out
