"""Tiny Idefics3 and SmolVLM."""

from __future__ import annotations

import torch
from transformers import (
    PreTrainedTokenizerFast,
)


from .common import PATCH, _finish, _text_config, tokenizer


def _idefics3_tokenizer() -> PreTrainedTokenizerFast:
    """The test tokenizer with Idefics3's image markers: ``<fake_token_around_image>`` (special, as its
    processor adds it), ``<global-img>`` and ``<row_i_col_j>`` (plain added tokens, so they survive
    decoding with ``skip_special_tokens`` and the question has to be found after them)."""
    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<fake_token_around_image>", "<end_of_utterance>"]})
    tok.add_tokens(["<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])
    return tok


def _idefics3(kind: str, seed: int, image: int, scale: int, tiles: bool):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tok = _idefics3_tokenizer()
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=image,
                  patch_size=PATCH)
    if kind == "smolvlm":
        from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMVisionConfig

        config_cls, model_cls, vision_config = SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMVisionConfig(**vision)
    else:
        config_cls, model_cls, vision_config = Idefics3Config, Idefics3ForConditionalGeneration, Idefics3VisionConfig(**vision)
    cfg = config_cls(vision_config=vision_config, text_config=_text_config(tok), scale_factor=scale,
                     image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = _finish(model_cls(cfg))
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 2 * image}, max_image_size={"longest_edge": image},
                                   do_image_splitting=tiles)
    tokens = (image // PATCH // scale) ** 2
    return model, Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=tokens)


def idefics3(seed: int = 0, image: int = 112, tiles: bool = True):
    """Idefics3 layout (``idefics3``): SigLIP tower without [CLS] (8 x 8 patches per 112 px tile), the
    connector's 2 x 2 pixel shuffle (16 tokens per tile), Llama; ``Idefics3Processor`` splitting a
    picture into up to 2 x 2 tiles plus the global one (``tiles=False``: the global one only)."""
    return _idefics3("idefics3", seed, image, 2, tiles)


def smolvlm(seed: int = 0, image: int = 224, tiles: bool = True):
    """SmolVLM layout (``smolvlm``): Idefics3's with a 4 x 4 pixel shuffle (16 x 16 patches, 16 tokens per
    224 px tile). The processor is ``Idefics3Processor``: ``SmolVLMProcessor`` writes the same image
    prompt but needs ``num2words`` and a video processor, neither a visprune dependency."""
    return _idefics3("smolvlm", seed, image, 4, tiles)
