"""What every tiny model shares: the word-level tokenizer and tiny configs (from ``adapters.tiny``), the
CLIP model for text partners, test images and prompts."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..adapters.tiny import IMAGE, PATCH, SPECIALS, WORDS, clip_vision_config, llama_config, word_tokenizer

tokenizer = word_tokenizer
_text_config = llama_config
_clip_vision = clip_vision_config

__all__ = ["IMAGE", "PATCH", "SPECIALS", "WORDS", "_clip_vision", "_finish", "_text_config", "clip_model", "images",
           "prompt", "tokenizer"]


def _finish(model):
    """Evaluation mode, and ``generate`` pads with the language model's pad id."""
    model.eval()
    model.generation_config.pad_token_id = getattr(model.config, "text_config", model.config).pad_token_id
    return model


def clip_model(vision_config, seed: int = 0):
    """A tiny ``CLIPModel`` around ``vision_config`` (the text partner of scorers that need CLIP text)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    tok = tokenizer()
    text = CLIPTextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=len(tok),
        max_position_embeddings=64, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, projection_dim=16,
    )
    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config=text.to_dict(), vision_config=vision_config.to_dict(), projection_dim=16)
    return CLIPModel(cfg).eval()


def images(n: int, size: tuple[int, int] = (IMAGE, IMAGE), seed: int = 0) -> list[Image.Image]:
    """Images from plain to busy, so spectral budgets differ between them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = size[1], size[0]
        if i % 2 == 0:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            arr = np.zeros((h, w, 3), dtype=np.uint8)
            arr[:, : w // 2] = (200, 30, 30)
        out.append(Image.fromarray(arr))
    return out


def prompt(question: str, n_images: int = 1) -> str:
    return "USER: " + "<image>\n" * n_images + question + " ASSISTANT:"
