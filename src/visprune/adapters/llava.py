"""LLaVA-1.5 (``llava``): one crop per image, fixed token count."""

from __future__ import annotations

from ..measure.savings import Counts, Section, after_connector, build, flops, meta, prefill
from .llava_family import LlavaFamilyAdapter, clip_l336_config, vicuna_7b_config
from .tiny import IMAGE, PATCH, Tiny, clip_vision_config, llama_config, word_tokenizer


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


def _tiny_config(tok, image: int = IMAGE, vision: tuple[int, int] | dict = (32, 3), text: tuple[int, int] | dict = (32, 2)):
    """LLaVA-1.5 layout: CLIP tower, Llama, 14-px patches. ``vision`` / ``text``: (hidden, layers) of the
    tiny default shapes, or a dict of ``CLIPVisionConfig`` / ``LlamaConfig`` fields (the benchmark's sizes)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if isinstance(vision, dict):
        vision_config = CLIPVisionConfig(image_size=image, patch_size=PATCH, **vision)
    else:
        vision_config = clip_vision_config(image, *vision)
    if isinstance(text, dict):
        text_config = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, max_position_embeddings=2048, **text)
    else:
        text_config = llama_config(tok, *text)
    return LlavaConfig(vision_config=vision_config, text_config=text_config, vision_feature_layer=-2,
                       image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default")


def llava_processor(image: int = IMAGE, tok=None):
    """LLaVA-1.5's processor for ``image``-pixel square crops, 14-px patches, with the test tokenizer."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    ip = CLIPImageProcessorPil(size={"shortest_edge": image}, crop_size={"height": image, "width": image})
    return LlavaProcessor(image_processor=ip, tokenizer=tok or word_tokenizer(), patch_size=PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


TINY = {"llava": Tiny("LlavaForConditionalGeneration", _tiny_config,
                      lambda tok, config, image=IMAGE, **_: llava_processor(image, tok))}
