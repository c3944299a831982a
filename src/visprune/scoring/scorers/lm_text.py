"""``lmtext``: question relevance with the model's own embeddings, no extra weights."""

from __future__ import annotations

import torch

from ..context import QUESTION_EMBEDS, ScoreContext
from .base import Scorer, register_scorer


@register_scorer("lmtext")
class LmTextScorer(Scorer):
    """Max cosine similarity between a projected visual token and the question's tokens.

    The projector maps visual tokens into the language model's input-embedding space, so the
    language model's own embeddings of the question words are a text representation every
    supported model already has. Score of token ``i``: ``max_q cos(v_i, e_q)`` over the question
    tokens ``q`` (late interaction, so one matching word is enough). An empty question scores 0.
    """

    needs = frozenset({QUESTION_EMBEDS})
    relevance_source = "lmtext"

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        embeds = ctx.require(QUESTION_EMBEDS, "scorer 'lmtext'")
        feats = torch.nn.functional.normalize(torch.nan_to_num(ctx.features.float(), nan=0.0), dim=-1)
        out = torch.zeros(feats.shape[:2], device=feats.device)
        for i, e in enumerate(embeds):
            if e.shape[0]:
                e = torch.nn.functional.normalize(e.float().to(feats.device), dim=-1)
                out[i] = (feats[i] @ e.T).amax(-1)
        return out
