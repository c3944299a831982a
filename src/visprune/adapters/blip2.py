"""BLIP-2 (``blip-2``): cut points ``query`` (default) and ``vit``; see ``blip2_family``."""

from __future__ import annotations

import torch

from ..measure.savings import Section
from .blip2_family import Blip2FamilyAdapter, blip_savings
from .tiny import IMAGE, PATCH, Tiny, llama_config


class Blip2Adapter(Blip2FamilyAdapter):
    model_types = ("blip-2",)


def savings(tiny: bool) -> list[Section]:
    """BLIP-2 OPT-2.7b at both cut points (``blip2_family.blip_savings``)."""
    return blip_savings(tiny, instruct=False)


def tiny_fields(tok, query_tokens: int, lm: str) -> dict:
    """Vision / Q-Former / language-model configs of a tiny BLIP-2 or InstructBLIP."""
    from transformers import OPTConfig, T5Config

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  image_size=IMAGE, patch_size=PATCH, initializer_range=0.02)  # the default 1e-10 gives a dead tower
    qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   vocab_size=len(tok), pad_token_id=tok.pad_token_id, max_position_embeddings=64)
    if lm == "opt":
        text = OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                         word_embed_proj_dim=32, vocab_size=len(tok), max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    elif lm == "t5":  # FLAN-T5 variants: encoder-decoder language model
        text = T5Config(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, vocab_size=len(tok),
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        decoder_start_token_id=tok.pad_token_id)
    else:
        text = llama_config(tok)
    return dict(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(), num_query_tokens=query_tokens,
                image_token_index=tok.convert_tokens_to_ids("<image>"))


def tiny_init(model, seed: int) -> None:
    # transformers initialises the learned queries to zeros (a trained model has distinct ones); with
    # identical queries every Q-Former output would be the same token, so draw them at random.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.query_tokens.copy_(torch.randn(model.query_tokens.shape, generator=g))


def tiny_image_processor():
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    return BlipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})


def blip_prompt(question: str) -> str:
    return f"Question: {question} Answer:"


def _tiny_config(tok, query_tokens: int = 8, lm: str = "opt"):
    """BLIP-2 layout (``blip-2``): ViT with fused qkv and [CLS], Q-Former, OPT (``lm="llama"``: Llama,
    ``lm="t5"``: an encoder-decoder T5 as in the FLAN-T5 checkpoints)."""
    from transformers import Blip2Config

    return Blip2Config(**tiny_fields(tok, query_tokens, lm))


def _tiny_processor(tok, config, **_):
    from transformers import Blip2Processor

    return Blip2Processor(image_processor=tiny_image_processor(), tokenizer=tok,
                          num_query_tokens=config.num_query_tokens)


TINY = {"blip-2": Tiny("Blip2ForConditionalGeneration", _tiny_config, _tiny_processor, init=tiny_init)}
