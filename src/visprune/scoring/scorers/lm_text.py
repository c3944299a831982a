"""``lmtext``: question relevance with the model's own embeddings, no extra weights."""

from __future__ import annotations

import torch

from ..context import QUESTION_EMBEDS, ScoreContext
from .base import Scorer, register_scorer


@register_scorer("lmtext")
class LmTextScorer(Scorer):
    """Standardised cosine similarity between a projected visual token and the question's tokens.

    The projector maps visual tokens into the language model's input-embedding space, so the
    language model's own embeddings of the question words are a text representation every
    supported model already has. With ``c[i, q] = cos(v_i, e_q)``, the score of token ``i`` is
    ``max_q (c[i, q] - mean_j c[j, q]) / std_j c[j, q]``: each question token's similarities are
    standardised over the image's candidate tokens ``j`` (population std), then the best question
    token counts (late interaction, so one matching word is enough). An empty question scores 0.

    Why standardise (docs/choices.md, "Why lmtext ranks the relevant patches last"): projected
    tokens share one dominant direction, nearest to the plain background, and the question's
    embeddings lean towards it, so the raw ``max_q c[i, q]`` ranks the background first and the
    question's objects last. ``standardize=False`` gives that raw score.
    """

    needs = frozenset({QUESTION_EMBEDS})
    relevance_source = "lmtext"

    def __init__(self, standardize: bool = True) -> None:
        self.standardize = standardize

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        embeds = ctx.require(QUESTION_EMBEDS, "scorer 'lmtext'")
        feats = torch.nn.functional.normalize(torch.nan_to_num(ctx.features.float(), nan=0.0), dim=-1)
        cand = ctx.candidates
        out = torch.zeros(feats.shape[:2], device=feats.device)
        for i, e in enumerate(embeds):
            if e.shape[0]:
                e = torch.nn.functional.normalize(e.float().to(feats.device), dim=-1)
                c = feats[i] @ e.T  # [N, Q]
                if self.standardize:  # masked statistics: no host read
                    w = cand[i].to(c.dtype)[:, None]
                    n = w.sum().clamp_min(1.0)
                    mean = (c * w).sum(0) / n
                    std = (((c - mean) ** 2 * w).sum(0) / n).sqrt()
                    c = (c - mean) / (std + 1e-6)
                out[i] = c.amax(-1)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(standardize={self.standardize})" if not self.standardize else super().__repr__()
