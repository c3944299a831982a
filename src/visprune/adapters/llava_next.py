"""LLaVA-NeXT / LLaVA-1.6 (``llava_next``): any-resolution crops, packed with newline tokens."""

from __future__ import annotations

from ..measure.savings import Section, after_connector, build, flops, meta, prefill
from .llava_family import LlavaFamilyAdapter, clip_l336_config, vicuna_7b_config
from .tiny import IMAGE, PATCH, Tiny, clip_vision_config, llama_config


class LlavaNextAdapter(LlavaFamilyAdapter):
    model_types = ("llava_next",)
    packs = True
    one_grid = False  # crops packed with newline tokens
    tells_crops = True  # unpadding only drops tokens: each packed token lies in one crop
    tower_crops = True  # VisionZip's official any-resolution path: every crop whole, in the tower's space


def savings(tiny: bool) -> list[Section]:
    """LLaVA-NeXT-7B (llava-hf/llava-v1.6-vicuna-7b-hf) on a 672x672 image: base + 2x2 crops, 5 CLIP passes;
    pruned after the projector, newline tokens protected."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    vis = clip_l336_config(tiny)
    s = vis.image_size
    cfg = LlavaNextConfig(vision_config=vis, text_config=vicuna_7b_config(tiny, 32064), image_token_id=32000,
                          vision_feature_layer=-2, vision_feature_select_strategy="default",
                          image_grid_pinpoints=[[s, 2 * s], [2 * s, s], [2 * s, 2 * s], [s, 3 * s], [3 * s, s]])
    m = build(LlavaNextForConditionalGeneration, cfg)
    side = s // vis.patch_size
    crops = 5
    content = crops * side * side  # base 24x24 + the 2x2 crops as one 48x48 grid (no unpadding on a square image)
    newlines = 2 * side  # one per row of the 48x48 grid, protected (always kept)
    vision = flops(m.model.vision_tower, meta(crops, 3, s, s), output_hidden_states=True)
    connector = flops(m.model.multi_modal_projector, meta(1, content, vis.hidden_size))
    width = cfg.text_config.hidden_size
    rows = after_connector(content, vision, connector,
                           lambda length: prefill(m.model.language_model, m.lm_head, width, length), protected=newlines)
    return [Section("LLaVA-NeXT-7B (Vicuna)", f"{content} + {newlines} newline tokens (672x672 image), pruned after the "
                    "projector; newline tokens protected", rows, source="llava-hf/llava-v1.6-vicuna-7b-hf's config.json")]


PINPOINTS = [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE]]  # the tiny models' any-resolution grid


def tiny_fields(tok) -> dict:
    """What tiny LLaVA-NeXT and LLaVA-NeXT-Video configs share: the CLIP tower, the any-resolution grid."""
    return dict(vision_config=clip_vision_config(), text_config=llama_config(tok), vision_feature_layer=-2,
                image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
                image_grid_pinpoints=PINPOINTS)


def tiny_processor(tok, config=None, **_):
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    ip = LlavaNextImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE},
                                    image_grid_pinpoints=PINPOINTS)
    return LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _tiny_config(tok):
    """LLaVA-NeXT layout: LLaVA-1.5's CLIP tower and Llama, any-resolution crops of 56 px (1x1, 1x2, 2x1)."""
    from transformers import LlavaNextConfig

    return LlavaNextConfig(**tiny_fields(tok))


TINY = {"llava_next": Tiny("LlavaNextForConditionalGeneration", _tiny_config, tiny_processor)}
