"""``visionzip``: dominant tokens by [CLS] attention plus merged contextual tokens."""

from __future__ import annotations

import torch

from ... import ops
from ..context import KEYS, SALIENCY, ScoreContext
from .base import Scorer, register_scorer

#: VisionZip's published split: 54 dominant + 10 contextual of 64 (108 + 20 of 128, 162 + 30 of 192).
CONTEXTUAL_SHARE = 10 / 64


@register_scorer("visionzip")
class VisionZipScorer(Scorer):
    """VisionZip (Yang et al., CVPR 2025, arXiv 2412.04467), Sec. 3.2, training-free variant.

    - *Dominant* tokens: the ``k - c`` tokens with the highest [CLS] attention (the ``cls`` scorer's
      saliency, layer -2 as the paper uses for LLaVA).
    - *Contextual* tokens, ``c = round(k * 10 / 64)`` (the paper's 54 + 10 split of 64): of the
      remaining tokens, ``c`` targets are taken at a uniform stride; every other remaining token is
      assigned to its most similar target by cosine similarity of the scoring layer's key vectors
      (the paper's merging metric) and averaged into it.

    Deviation, stated: the paper averages vision-tower hidden states before the projector;
    visprune works at the language-model interface and averages the projected tokens. With LLaVA's
    MLP projector the two differ (the projector is not linear). The contextual token sits at its
    target's position, which :func:`visprune.last_kept` reports.
    """

    needs = frozenset({SALIENCY, KEYS})

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return ctx.require(SALIENCY, "scorer 'visionzip'").float()

    def _split(self, ctx: ScoreContext, scores: torch.Tensor, i: int, k: int):
        cand = ctx.candidates[i]
        n_ctx = min(int(round(k * CONTEXTUAL_SHARE)), max(k - 1, 0))
        n_dom = k - n_ctx
        masked = torch.where(cand, scores[i].float(), torch.full_like(scores[i], float("-inf"), dtype=torch.float))
        dominant = ops.keep_indices(masked[None], n_dom)[0]
        rest_mask = cand.clone()
        rest_mask[dominant] = False
        rest = rest_mask.nonzero(as_tuple=True)[0]
        if n_ctx == 0 or rest.numel() == 0:
            return dominant, rest[:0], (rest[:0], rest[:0])
        n_ctx = min(n_ctx, rest.numel())
        step = max(rest.numel() // n_ctx, 1)
        targets = rest[::step][:n_ctx].contiguous()
        others = rest[~torch.isin(rest, targets)]
        keys = torch.nn.functional.normalize(ctx.keys[i].float(), dim=-1)
        assign = (keys[others] @ keys[targets].T).argmax(-1) if others.numel() else others
        return dominant, targets, (others, assign)

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        return [torch.sort(torch.cat(self._split(ctx, scores, i, int(k[i]))[:2])).values for i in range(len(k))]

    def merge(self, ctx: ScoreContext, kept: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each contextual token becomes the mean of its target and the tokens assigned to it,
        for all targets at once (a scatter-add, no loop over tokens)."""
        scores = self(ctx)
        out = []
        for i, idx in enumerate(kept):
            k = len(idx) - int(ctx.protected[i].sum())
            _, targets, (others, assign) = self._split(ctx, scores, i, k)
            feats = ctx.features[i, idx].clone()
            if targets.numel():
                x = ctx.features[i]
                sums = x[targets].float().index_add(0, assign, x[others].float())
                sizes = torch.bincount(assign, minlength=len(targets)).to(sums) + 1
                feats[torch.searchsorted(idx, targets)] = (sums / sizes[:, None]).to(feats.dtype)
            out.append(feats)
        return out
