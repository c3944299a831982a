"""Tiny IDEFICS (open Flamingo)."""

from __future__ import annotations

import torch


from .common import IMAGE, PATCH, tokenizer


def idefics(seed: int = 0, resampler: bool = True, latents: int = 4):
    """IDEFICS layout (``idefics``, open Flamingo): CLIP-style ViT with [CLS], perceiver resampler
    (``resampler=False``: the language model cross-attends to the patches), Llama with gated
    cross-attention. The gates start open (``alpha_initializer="ones"``; transformers' default of zeros
    would make the images invisible to the language model)."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsProcessor
    from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<fake_token_around_image>"]})
    cfg = IdeficsConfig(
        vocab_size=len(tok), additional_vocab_size=0, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, cross_layer_interval=1, use_resampler=resampler, alpha_initializer="ones",
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, freeze_text_layers=False, freeze_vision_layers=False,
        vision_config=dict(embed_dim=32, image_size=IMAGE, intermediate_size=64, patch_size=PATCH,
                           num_attention_heads=4, num_hidden_layers=3),
        perceiver_config=dict(use_resampler=resampler, resampler_n_latents=latents, resampler_depth=2,
                              resampler_n_heads=4, resampler_head_dim=8),
    )
    torch.manual_seed(seed)
    model = IdeficsForVisionText2Text(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    proc = IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=IMAGE), tokenizer=tok,
                            image_size=IMAGE)
    return model, proc


def idefics_prompts(images, questions):
    """IDEFICS prompts: one list per sample, ``User:``, the image, the question, ``Assistant:``."""
    return [["USER:", img, f"{q} ASSISTANT:"] for img, q in zip(images, questions)]
