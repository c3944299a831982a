"""``vispruner``: important tokens by [CLS] attention plus diverse tokens by duplicate removal (VisPruner)."""

from __future__ import annotations

import torch

from ..context import SALIENCY, ScoreContext
from .base import Scorer, register_scorer

#: share of ``k`` taken by attention, the rest by diversity: the official default (``--important_ratio``
#: in ``llava/eval/model_vqa_loader.py``; the README's examples use 0.5 and 0.75)
IMPORTANT_RATIO = 0.5
#: most duplicates removed per round, as in the official loop
ROUND = 8


@register_scorer("vispruner")
class VisPrunerScorer(Scorer):
    """VisPruner (Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective
    Token Pruning in VLMs", ICCV 2025, arXiv 2412.01818 v2). Follows the official code,
    github.com/Theia-4869/VisPruner: ``llava/model/llava_arch.py``, ``LlavaMetaForCausalLM.encode_images``.

    Of the ``k`` tokens an image keeps:

    - *important*: ``int(k * important_ratio)`` tokens with the highest [CLS] attention (the ``cls``
      scorer's saliency: heads averaged, at the layer whose output the language model receives, as
      the official code takes ``attentions[select_layer]``; towers without [CLS] use the mean
      attention each token receives, as ``cls`` does);
    - *diverse*: the rest, by removing duplicates from the remaining tokens (ordered by attention,
      highest first) in rounds until ``k`` are left: split them alternately into ``a`` (even
      places) and ``b`` (odd places), score each ``a`` token by its largest cosine similarity to any
      ``b`` token, drop the ``min(8, remaining - wanted)`` highest-scoring ``a`` tokens (all of ``a`` if it has
      fewer), and continue
      with the other ``a`` tokens (most similar first) followed by ``b``.

    Sorts are stable: ties go to the lower index (the official code's GPU argsort leaves them open).

    Deliberate differences from the official code, forced by visprune's interface:

    - Similarities are between the projected tokens the language model receives; the official code
      compares the vision tower's outputs before the projector (LLaVA's MLP projector is not linear,
      so the two can rank pairs differently).
    - LLaVA-NeXT: the official code selects ``k`` tokens in each crop; here the image's tokens are
      one set (packed, row-end newlines protected) and ``k`` is the image's.
    - An odd number of remaining tokens puts the extra one in ``a`` (the official indexing assumes
      an even count), and when ``k`` leaves no diverse tokens none are chosen (the official loop
      would fail on an empty ``b``).

    Args:
        important_ratio: share of ``k`` chosen by attention, in ``[0, 1]`` (default 0.5, official).
    """

    needs = frozenset({SALIENCY})

    def __init__(self, important_ratio: float = IMPORTANT_RATIO) -> None:
        if isinstance(important_ratio, bool) or not isinstance(important_ratio, (int, float)) or not 0 <= important_ratio <= 1:
            raise ValueError(f"important_ratio must be in [0, 1], got {important_ratio!r}")
        self.important_ratio = important_ratio

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return ctx.require(SALIENCY, "scorer 'vispruner'").float()

    def _select_one(self, features: torch.Tensor, scores: torch.Tensor, cand: torch.Tensor, k: int) -> torch.Tensor:
        idx = cand.nonzero(as_tuple=True)[0]
        order = idx[torch.sort(scores[idx].float(), descending=True, stable=True).indices]
        n_imp = int(k * self.important_ratio)
        n_div = k - n_imp
        important, rest = order[:n_imp], order[n_imp:]
        if n_div == 0:
            return torch.sort(important).values
        f = torch.nn.functional.normalize(torch.nan_to_num(features[rest].float(), nan=0.0), dim=-1)
        sim = f @ f.T  # once: every round reads a block of it (the official loop multiplies again each round)
        place = torch.arange(rest.numel(), device=rest.device)  # rest[place] is what remains, in its order
        while place.numel() > n_div:
            drop = min(ROUND, place.numel() - n_div)
            a, b = place[0::2], place[1::2]
            dup = sim[a[:, None], b[None, :]].amax(-1)
            a = a[torch.sort(dup, descending=True, stable=True).indices[drop:]]
            place = torch.cat([a, b])
        return torch.sort(torch.cat([important, rest[place]])).values

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        cand = ctx.candidates
        return [self._select_one(ctx.features[i], scores[i], cand[i], int(k[i])) for i in range(len(k))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(important_ratio={self.important_ratio!r})"
