"""``pool``: plain spatial average pooling of the patch grid, the baseline that beats many methods."""

from __future__ import annotations


import torch
import torch.nn.functional as F

from ..context import ScoreContext
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
    """

    needs = frozenset()
    needs_grid = True  # refused by adapters whose images are not one grid each (Adapter.one_grid)

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return torch.zeros(ctx.features.shape[:2], device=ctx.features.device)

    def _plan(self, ctx: ScoreContext, i: int, k: int):
        """(candidate indices in grid order, grid, pooled grid, window centres as token indices)."""
        if ctx.grids is None or ctx.grids[i] is None:
            raise ValueError("scorer 'pool' needs the patch grid of each image, which this adapter does not provide")
        rows, cols = ctx.grids[i]
        r, c = pool_shape(rows, cols, max(int(k), 1))
        cand = ctx.candidates[i].nonzero(as_tuple=True)[0]
        mid_r = torch.tensor([(r0 + r1 - 1) // 2 for r0, r1 in _cells(rows, r)], device=cand.device)
        mid_c = torch.tensor([(c0 + c1 - 1) // 2 for c0, c1 in _cells(cols, c)], device=cand.device)
        centres = cand[(mid_r[:, None] * cols + mid_c[None, :]).reshape(-1)]  # row-major, like the pooled grid
        return cand, (rows, cols), (r, c), centres

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        return [self._plan(ctx, i, int(k[i]))[3] for i in range(len(k))]

    def merge(self, ctx: ScoreContext, kept: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, idx in enumerate(kept):
            n_prot = int(ctx.protected[i].sum())
            cand, (rows, cols), (r, c), centres = self._plan(ctx, i, len(idx) - n_prot)
            grid = ctx.features[i, cand].reshape(rows, cols, -1).permute(2, 0, 1)  # [H, rows, cols]
            pooled = F.adaptive_avg_pool2d(grid.unsqueeze(0), (r, c))[0].flatten(1).T  # [r * c, H]
            feats = ctx.features[i, idx].clone()
            feats[torch.searchsorted(idx, centres)] = pooled.to(feats.dtype)  # idx is ascending
            out.append(feats)
        return out
