"""``fastv``: in-LLM pruning by the attention of the last prompt token (FastV)."""

from __future__ import annotations

from typing import Any

import torch

from ..context import ScoreContext
from .base import Scorer, register_scorer


@register_scorer("fastv")
class FastVScorer(Scorer):
    """FastV (Chen et al., ECCV 2024, arXiv 2403.06764), Sec. 4, "FastV".

    The language model's first ``K = PruneConfig.llm_layer`` layers (default 2, the paper's
    ``K=2``) see every visual token. The attention that the last prompt token pays to each image
    token in layer ``K-1`` (heads averaged, as the official code's ``last_layer_attention``) ranks
    them; layers ``K`` and up see only the kept ones, and their KV cache holds only those, so
    ``generate`` decodes against the shorter cache. The budget (``keep`` / ``k`` / ``energy`` /
    ``iqr``) sets how many are kept per image, as for every scorer.

    The attention row is recomputed from that layer's q/k projections with the model's own rotary
    embedding (O(L*D)), so the language model keeps its SDPA / FlashAttention kernels. Layers
    below ``K`` run at full length, which is why FastV saves less than pruning before the LM at
    the same budget. Needs the same number of kept tokens in every row of a batch (ratio and fixed
    budgets on same-size images); ragged in-LLM budgets raise ``ValueError``.
    """

    in_llm = True
    needs = frozenset()

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        from ..inllm import decoder_layers

        layers = decoder_layers(model)
        if config.llm_layer >= len(layers):
            raise ValueError(f"llm_layer={config.llm_layer} but the language model has {len(layers)} layers")

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        raise RuntimeError("fastv scores come from inside the language model; use it through visprune.prune_")
