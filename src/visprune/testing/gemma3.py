"""Tiny Gemma 3."""

from __future__ import annotations

import torch
from transformers import (
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)


from .common import PATCH, _finish, tokenizer


def gemma3(seed: int = 0, image: int = 112, tokens: int = 16):
    """Gemma 3 layout (``gemma3``): SigLIP tower without [CLS] (8 x 8 patches at 112 px), the projector's
    average pool into ``tokens`` (4 x 4: 2 x 2 windows), a Gemma 3 language model (sliding-window layers),
    ``Gemma3Processor`` with ``<start_of_image>`` / ``<end_of_image>`` around each image's tokens."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tok = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer().backend_tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
        eos_token="</s>", extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                "image_token": "<image>"})
    tok.padding_side = "left"
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in
           (("image_token_id", "<image>"), ("boi_token_id", "<start_of_image>"), ("eoi_token_id", "<end_of_image>"))}
    text = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=64,
                            max_position_embeddings=512, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=image, patch_size=PATCH)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens, **ids)
    torch.manual_seed(seed)
    model = _finish(Gemma3ForConditionalGeneration(cfg))
    ip = Gemma3ImageProcessorPil(size={"height": image, "width": image})
    return model, Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=tokens)


def gemma3_prompt(question: str, n_images: int = 1) -> str:
    return "user " + "<start_of_image> " * n_images + question + " model"
