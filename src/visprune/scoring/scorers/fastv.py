"""``fastv``: in-LLM pruning by the attention of the last prompt token (FastV).

Only which tokens to keep at which layer; the decoder-layer hooks are :mod:`.llm_pruning`'s.
"""

from __future__ import annotations

from typing import Any

import torch

from ..decide import decide
from .base import register_scorer
from .llm_pruning import InLLMScorer, StageView, check_attention, decoder_layers, kept_mask, last_token_attention

__all__ = ["FastVScorer", "check_attention", "decoder_layers"]  # the last two: older import paths


@register_scorer("fastv")
class FastVScorer(InLLMScorer):
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
    the same budget. Rows may keep different numbers of tokens (ragged budgets, beam search).
    """

    def stage_layers(self, config: Any, n_layers: int) -> list[int]:
        if config.llm_layer >= n_layers:
            raise ValueError(f"llm_layer={config.llm_layer} but the language model has {n_layers} layers")
        return [config.llm_layer]

    def attention_layers(self, config: Any, n_layers: int) -> list[int]:
        return [config.llm_layer - 1]  # the official last_layer_attention, output_attentions at layer K-1

    def choose(self, stage: int, view: StageView) -> tuple[torch.Tensor, torch.Tensor]:
        attn = decoder_layers(view.model)[view.layer - 1].self_attn
        row = last_token_attention(attn, view.prev_input, view.cos_sin, view.valid)
        scores = view.image_scores(row)
        kept, _ = decide(view.state.scorer, view.state.budget, view.ctx, scores)
        return kept_mask(kept, scores), scores
