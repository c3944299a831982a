"""What every tiny model shares: the word-level tokenizer, the Llama text config, test images and prompts."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPConfig,
    CLIPModel,
    LlamaConfig,
    PreTrainedTokenizerFast,
)



WORDS = (
    "USER : ASSISTANT what colour is the red green blue star circle square left right of a an how many "
    "there ? . , yes no one two three shape big small top bottom cat dog"
).split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
IMAGE = 56
PATCH = 14


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    fast.padding_side = "left"
    return fast


def _text_config(tok, hidden: int = 32, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def _clip_vision(image: int = IMAGE, hidden: int = 32, layers: int = 3) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
        image_size=image, patch_size=PATCH, projection_dim=16,
    )


def _finish(model):
    model.eval()
    model.generation_config.pad_token_id = model.config.text_config.pad_token_id
    return model


def clip_model(vision_config: CLIPVisionConfig, seed: int = 0) -> CLIPModel:
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
