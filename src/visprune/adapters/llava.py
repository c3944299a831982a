"""LLaVA-1.5 (``llava``): one crop per image, fixed token count."""

from __future__ import annotations

from ..measure.savings import Counts, Section, after_connector, build, flops, meta, prefill
from .llava_family import LlavaFamilyAdapter, clip_l336_config, vicuna_7b_config


class LlavaAdapter(LlavaFamilyAdapter):
    model_types = ("llava",)
    tower_space = True  # one crop: the tower's hidden states map one to one onto the placeholders


def savings(tiny: bool) -> list[Section]:
    """LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf): CLIP-L/336, 2-layer MLP projector, Vicuna-7B; pruned after
    the projector."""
    c = counts_7b(tiny)
    return [Section("LLaVA-1.5-7B", f"{c.n} projected patch tokens, pruned after the projector",
                    after_connector(c.n, c.vision, c.connector, c.lm), source="llava-hf/llava-1.5-7b-hf's config.json")]


def counts_7b(tiny: bool = False) -> Counts:
    """LLaVA-1.5-7B's counted prefill on one 336 px image (576 tokens), on the ``meta`` device: the
    savings row above and ``visprune bench --geometry llava-1.5-7b`` without a GPU."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    vis = clip_l336_config(tiny)
    cfg = LlavaConfig(vision_config=vis, text_config=vicuna_7b_config(tiny, 32064), image_token_id=32000,
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    m = build(LlavaForConditionalGeneration, cfg)
    side = vis.image_size // vis.patch_size
    n = side * side
    vision = flops(m.model.vision_tower, meta(1, 3, vis.image_size, vis.image_size), output_hidden_states=True)
    connector = flops(m.model.multi_modal_projector, meta(1, n, vis.hidden_size))
    width = cfg.text_config.hidden_size
    return Counts(n, vision, connector, lambda length: prefill(m.model.language_model, m.lm_head, width, length))
