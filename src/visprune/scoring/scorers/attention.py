"""``cls``: [CLS] attention saliency (FasterVLM-style)."""

from __future__ import annotations

import torch

from ..context import SALIENCY, ScoreContext
from .base import Scorer, register_scorer


@register_scorer("cls")
class ClsAttentionScorer(Scorer):
    """Attention of the vision tower's [CLS] query to each visual token, heads averaged.

    The layer is ``PruneConfig.layer`` (default: the one whose output the language model
    receives). The row is recomputed from that layer's ``q_proj`` / ``k_proj`` outputs, so the
    tower keeps its SDPA / FlashAttention kernels; it equals the eager attention row. Towers
    without a [CLS] token (SigLIP) use the mean attention each token receives instead (see
    :func:`visprune.ops.received_attention`). Cf. FasterVLM (Zhang et al., arXiv 2412.01818).
    """

    needs = frozenset({SALIENCY})

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return ctx.require(SALIENCY, "scorer 'cls'").float()
