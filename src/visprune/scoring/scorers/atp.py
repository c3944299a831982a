"""``atp``: the ATP hybrid of [CLS] saliency and question relevance."""

from __future__ import annotations


import torch

from ... import ops
from ..context import ScoreContext
from .attention import ClsAttentionScorer
from .base import register_scorer
from .clip_text import QuestionTermScorer


@register_scorer("atp")
class AtpScorer(QuestionTermScorer):
    """ATP (Li, Song, Hu; arXiv 2512.12701): ``alpha * norm(a) + (1 - alpha) * norm(r)``.

    ``a`` is the [CLS] attention saliency (scorer ``cls``), ``r`` the question relevance: CLIP
    similarity (scorer ``text``) when there is a CLIP text encoder (``PruneConfig.text_encoder``;
    the default ``"auto"`` finds the partner the model's folder ships), otherwise the weight-free
    language-model embedding similarity (scorer ``lmtext``). Which one ran:
    ``visprune.last_selection(model).relevance``. ``norm`` is ``PruneConfig.norm``,
    taken per image over the candidate tokens. The paper does not publish ``alpha``; the default
    0.75 and ``norm="minmax"`` were measured on the shapes proving ground (docs/defaults.md,
    ``scripts/tune_defaults.py``), where [CLS] saliency alone still kept the most question-relevant
    patches: the text term of that small CLIP costs recall, and 0.75 costs least.
    """

    def __init__(self) -> None:
        super().__init__()
        self.saliency = ClsAttentionScorer()

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return self.saliency.needs | self.relevance.needs

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        cfg, cand = ctx.config, ctx.candidates
        a = ops.normalize(self.saliency(ctx), cfg.norm, valid=cand)
        r = ops.normalize(self.relevance(ctx), cfg.norm, valid=cand)
        return cfg.alpha * a + (1.0 - cfg.alpha) * r
