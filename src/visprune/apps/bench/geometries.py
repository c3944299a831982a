"""The benchmark's geometries: random-weight LLaVA-1.5 models from tiny to real size, with their inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ... import testing

GEOMETRIES = ("tiny", "small", "llava-1.5-7b")
QUESTION = "what colour is the star ?"


@dataclass
class Geometry:
    name: str
    model: Any
    inputs: dict
    description: str



def llava_7b(device: str, dtype: torch.dtype, seed: int = 0, layers: tuple[int, int] | None = None):
    """LLaVA-1.5-7B at its real size with random weights, made directly on ``device`` in ``dtype``
    (no float32 copy on the host first: 7 B parameters are 14 GB in bf16, 28 GB in float32).

    The vocabulary keeps Vicuna's 32,064 rows (the output head's FLOPs are real); the prompt uses
    the test tokenizer's ids, which all lie inside it. ``layers``: (vision, text) depth override,
    for a quick check of this code path at full width; the geometry itself never sets it.
    """
    from transformers import LlavaForConditionalGeneration

    tok = testing.tokenizer()
    proc = testing.llava_processor(336, tok)
    cfg = llava_7b_config(*(layers or ()))
    text = cfg.text_config
    text.pad_token_id, text.bos_token_id, text.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    cfg.image_token_id = tok.convert_tokens_to_ids("<image>")
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, proc


LLAVA_7B_PARAMETERS = 7_063_427_072  # llava-hf/llava-1.5-7b-hf's count; tests/test_bench.py checks the build
LLAVA_7B_DESCRIPTION = ("LLaVA-1.5-7B at real size: CLIP ViT-L/14 at 336 px (576 visual tokens), 2-layer MLP "
                        "projector, Vicuna-7B-shaped Llama (4096 x 32 layers, 32,064-token vocabulary), random weights")



TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
SMALL = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
SMALL_TEXT = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=12)


def build_geometry(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Geometry:
    """The model and inputs of a benchmark geometry (random weights; nothing is downloaded).

    ``llava-1.5-7b`` is built at its real size on ``device`` (about 14 GB of weights in bf16);
    ``device="meta"`` gives its shapes without memory (no inputs can run there).
    """
    if name == "tiny":
        model, proc = testing.llava(image=56, vision=TINY, text=TINY_TEXT)
        desc = "tiny LLaVA: CLIP 32-wide x 3 layers at 56 px (16 tokens), Llama 32-wide x 2 layers"
    elif name == "small":
        model, proc = testing.llava(image=336, vision=SMALL, text=SMALL_TEXT)
        desc = ("small LLaVA: CLIP ViT-B-like tower (768 x 12 layers) at 336 px / 14 px patches = 576 visual tokens, "
                "Llama 768 x 12 layers (~110 M parameters without embeddings), random weights")
    elif name == "llava-1.5-7b":
        model, proc = llava_7b(device, dtype)
        desc = LLAVA_7B_DESCRIPTION
    else:
        raise ValueError(f"unknown geometry {name!r}; valid: {', '.join(GEOMETRIES)}")
    img = testing.images(1, size=(proc.image_processor.crop_size["width"],) * 2)
    inputs = proc(images=img, text=[testing.prompt(QUESTION)], return_tensors="pt")
    model = model.to(device=device, dtype=dtype)
    inputs = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
    return Geometry(name, model, inputs, desc)



def llava_7b_config(vision_layers: int = 24, text_layers: int = 32):
    """LLaVA-1.5-7B's published shapes (llava-hf/llava-1.5-7b-hf): CLIP ViT-L/14 at 336 px, Vicuna-7B."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=vision_layers, num_attention_heads=16,
            image_size=336, patch_size=14, projection_dim=768,
        ),
        text_config=LlamaConfig(
            hidden_size=4096, intermediate_size=11008, num_hidden_layers=text_layers, num_attention_heads=32,
            num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
        ),
        image_token_id=32000, vision_feature_layer=-2, vision_feature_select_strategy="default",
    )

