"""``prumerge`` / ``prumerge+``: outlier [CLS] attention, each kept token merged with its key neighbours."""

from __future__ import annotations

import torch

from ..context import LAST_QK, TOWER, ScoreContext
from .base import Scorer, register_scorer

#: neighbours merged into each kept token (the official ``topk(cos_sim_matrix, k=int(32))``)
NEIGHBOURS = 32


@register_scorer("prumerge")
class PruMergeScorer(Scorer):
    """PruMerge (Shang et al., arXiv 2403.15388). Follows the official code,
    github.com/42Shawn/LLaVA-PruMerge: ``llava/model/multimodal_encoder/clip_encoder.py``,
    ``CLIPVisionTower.token_prune_merge_advanced`` (its ``forward`` calls the ``_plus`` version,
    :class:`PruMergePlusScorer`; this one is the paper's PruMerge).

    - Score: the [CLS] row of the tower's *last* layer's attention, one softmax over the full-width
      ``q_proj(x) @ k_proj(x)^T * C^-0.5`` (``C`` the tower's hidden size; heads are not split), at
      the patches (``attn[:, 0, 1:]``; the softmax includes the [CLS] key).
    - Budget: by default ``iqr`` (:class:`~visprune.scoring.budgets.IqrBudget`): the patches above
      ``Q3 + 1.5 IQR`` of that score, the official ``outlier_dectection``; the kept count is the
      official ``int(N * ratio)``. Any budget works; ``k`` counts the kept patches.
    - Merge: each kept patch ``x_i`` becomes ``x_i + sum_j a_j x_j`` over its 32 nearest patches
      ``j != i`` (every patch, kept or not) by cosine similarity of the last layer's full-width
      ``k_proj`` output, ``a_j`` their score (not normalised, as the official code); then one extra
      token ``sum_j a_j x_j`` over the patches not kept, appended. ``x`` are the feature layer's
      hidden states (LLaVA's layer -2), before the projector; the model's projector runs on the result.
    - The language model receives the kept patches in descending score order (the official
      ``topk`` order), then the extra token; [CLS] is not sent. ``last_kept`` reports the kept
      patches ascending.

    Where the official code fails or hard-codes 576 patches, stated: fewer than 33 patches merge
    with all the others; when every patch is kept there is no extra token (nothing to sum); the
    budget keeps at least ``min_keep`` (1) where the official code would keep 0 and divide by 0.
    ``positions="original"`` is refused (``prune_``): the order is not the original one. Runs on
    single-crop LLaVA (``llava``); ``prune_`` refuses it elsewhere.
    """

    needs = frozenset({TOWER, LAST_QK})
    own_order = True
    default_budget = "iqr"
    plus = False

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        tower = ctx.require(TOWER, f"scorer {self.name!r}")
        out = torch.zeros(ctx.valid.shape, device=ctx.valid.device)
        for i, (q, k, h) in enumerate(zip(tower.last_q, tower.last_k, tower.hidden)):
            attn = torch.softmax((q[0].float() @ k.float().T) * h.shape[-1] ** -0.5, dim=-1)
            n = int(ctx.valid[i].sum())
            out[i, :n] = attn[tower.first : tower.first + n].to(out.device)
        return out

    def _order(self, ctx: ScoreContext, scores: torch.Tensor, i: int, k: int) -> torch.Tensor:
        """Candidate indices in the order the language model receives them."""
        cand = ctx.candidates[i]
        masked = torch.where(cand, scores[i].float(), torch.full_like(scores[i], float("-inf"), dtype=torch.float))
        n = int(cand.sum())
        k = int(n * (k / n)) if n else 0  # the official int(N * reduction_ratio)
        top = torch.topk(masked, k).indices  # descending score, as the official topk(sorted=True)
        if not self.plus or k == 0:
            return top
        # PruMerge+: spatially uniform samples not already kept, at a third of the kept tokens' stride
        step = max(int(int(1 / (k / n)) / 3), 1)  # the official int(step_length / 3), at least 1
        grid = torch.arange(0, n - 1, step, device=top.device)  # the official arange(0, 575, ...): N - 1
        return torch.cat([top, grid[~torch.isin(grid, top)]])

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        orders = [self._order(ctx, scores, i, int(k[i])) for i in range(len(k))]
        ctx.extras[self.name] = (orders, scores)  # per call: merge reads them back
        return [torch.sort(o).values for o in orders]

    def neighbourhood(self, ctx: ScoreContext, scores: torch.Tensor, i: int, order: torch.Tensor,
                      neighbours: int = NEIGHBOURS):
        """What image ``i``'s merge reads: the feature layer's patch hidden states ``x`` ``[n, Dv]`` (float),
        the scores ``a`` ``[n]``, each kept patch's ``neighbours`` key-nearest other patches ``near``
        ``[kept, neighbours]`` and the patches not kept ``rest`` (bool ``[n]``)."""
        tower = ctx.tower
        n = int(ctx.candidates[i].sum())
        rows = slice(tower.first, tower.first + n)
        x = tower.hidden[i][rows].float()
        keys = torch.nn.functional.normalize(tower.last_k[i][rows].float(), dim=-1)
        a = scores[i, :n].float().to(x.device)
        sim = keys[order] @ keys.T  # [kept, n]
        sim[torch.arange(len(order), device=sim.device), order] = -torch.inf  # not itself
        near = sim.topk(min(neighbours, n - 1), dim=-1).indices
        rest = torch.ones(n, dtype=torch.bool, device=x.device)
        rest[order] = False
        return x, a, near, rest

    def merge(self, ctx: ScoreContext, kept: list[torch.Tensor]) -> list[torch.Tensor]:
        orders, scores = ctx.extras[self.name]
        tower = ctx.tower
        out = []
        for i, order in enumerate(orders):
            x, a, near, rest = self.neighbourhood(ctx, scores, i, order)
            parts = [x[order] + (x[near] * a[near, None]).sum(1)]
            if rest.any():  # the extra token: every patch not kept, weighted by its score
                parts.append((x[rest] * a[rest, None]).sum(0, keepdim=True))
            out.append(tower.project(torch.cat(parts).to(tower.hidden[i].dtype)))
        return out


@register_scorer("prumerge+")
class PruMergePlusScorer(PruMergeScorer):
    """PruMerge+ (same paper and code): ``CLIPVisionTower.token_prune_merge_advanced_plus``, what
    the official ``CLIPVisionTower.forward`` runs, with ``if_adaptive=True``.

    As :class:`PruMergeScorer`, plus spatially uniform samples: with ``k`` outliers of ``N``
    patches, the patches ``0, s, 2s, ... < N - 1`` with ``s = int(int(N / k) / 3)`` (the official
    ``step_length = int(1 / reduction_ratio)``, ``arange(0, 575, int(step_length / 3))``) that are
    not outliers are kept too, after the outliers in the language model's order, and merged the
    same way. So the language model receives more than ``k`` tokens: ``k`` outliers, the samples,
    the extra token. ``s`` is at least 1 (the official code fails when ``k > N / 3``).
    """

    plus = True
