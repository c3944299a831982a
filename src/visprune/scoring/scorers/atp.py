"""``atp``: the ATP hybrid of [CLS] saliency and question relevance."""

from __future__ import annotations

from typing import Any

import torch

from ... import ops
from ...errors import warn_caller
from ..context import ScoreContext
from ..measured import DEFAULT_ALPHA, measured_atp, relevance_kind
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
    taken per image over the candidate tokens. The paper does not publish ``alpha``.

    ``alpha`` is chosen per model by measurement: ``PruneConfig(alpha=None)`` (the default) takes the
    alpha that ``visprune tune`` measured for the relevance that runs (``<model folder>/visprune.json``,
    :mod:`visprune.scoring.measured`), else 0.75 (measured on the shapes proving ground,
    docs/defaults.md). Where the measurement found that the question term does not help (its
    verdict ``tie`` or ``harms`` against the saliency term alone), ``prune_`` says so in one
    :class:`QuestionTermWarning` naming the better setting; with ``harms`` the measured alpha is 1.0,
    saliency alone, so ATP never mixes in a question term measured to cost accuracy.
    """

    def __init__(self) -> None:
        super().__init__()
        self.saliency = ClsAttentionScorer()
        self.alpha = DEFAULT_ALPHA
        self.measurement: dict | None = None  # the model folder's measurement that chose alpha, if any

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        super().setup(model, config, processor)
        kind = relevance_kind(self.relevance_source)
        self.measurement = measured_atp(model, kind)
        if config.alpha is not None:
            self.alpha = float(config.alpha)
            return
        self.alpha = float(self.measurement["alpha"]) if self.measurement else DEFAULT_ALPHA
        if self.measurement and self.measurement["verdict"] != "helps":
            warn_caller(question_term_warning(kind, self.measurement), QuestionTermWarning)

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return self.saliency.needs | self.relevance.needs

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        cfg, cand = ctx.config, ctx.candidates
        a = ops.normalize(self.saliency(ctx), cfg.norm, valid=cand)
        r = ops.normalize(self.relevance(ctx), cfg.norm, valid=cand)
        return self.alpha * a + (1.0 - self.alpha) * r


class QuestionTermWarning(UserWarning):
    """ATP's question term was measured on this model and did not help (``prune_``, once)."""


def question_term_warning(kind: str, m: dict) -> str:
    """The one warning of ``prune_`` where the measured question term does not help."""
    d = m["vs_saliency"]
    evidence = (f"ATP at alpha={m['measured_alpha']:g} answered {m['accuracy']:.3f} against {m['saliency_accuracy']:.3f} "
                f"for its saliency term alone, difference {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] "
                f"on {d['n']} calibration questions ({m['file']})")
    if m["verdict"] == "harms":
        return (f"ATP's question term ({kind} relevance) lowers accuracy on this model: {evidence}. ATP runs with "
                "alpha=1.0, saliency alone; scorer='cls' keeps the same tokens without computing the question term")
    return (f"ATP's question term ({kind} relevance) does not measurably help on this model: {evidence}, a tie. "
            f"ATP runs with the measured alpha={m['alpha']:g}; scorer='cls' is as accurate within the noise and "
            "skips the question term")
