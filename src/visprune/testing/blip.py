"""Tiny BLIP-2 and InstructBLIP."""

from __future__ import annotations

import torch


from .common import IMAGE, PATCH, _text_config, tokenizer


# --- BLIP-2, InstructBLIP, IDEFICS -------------------------------------------------------------


def _blip_parts(tok, query_tokens: int, lm: str):
    """Vision / Q-Former / language-model configs of a tiny BLIP-2 or InstructBLIP."""
    from transformers import OPTConfig

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  image_size=IMAGE, patch_size=PATCH, initializer_range=0.02)  # the default 1e-10 gives a dead tower
    qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   vocab_size=len(tok), pad_token_id=tok.pad_token_id, max_position_embeddings=64)
    if lm == "opt":
        text = OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                         word_embed_proj_dim=32, vocab_size=len(tok), max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    elif lm == "t5":  # FLAN-T5 variants: encoder-decoder language model
        from transformers import T5Config

        text = T5Config(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, vocab_size=len(tok),
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        decoder_start_token_id=tok.pad_token_id)
    else:
        text = _text_config(tok)
    return vision, qformer, text


def _blip_finish(model, query_tokens_seed: int):
    # transformers initialises the learned queries to zeros (a trained model has distinct ones); with
    # identical queries every Q-Former output would be the same token, so draw them at random.
    g = torch.Generator().manual_seed(query_tokens_seed)
    with torch.no_grad():
        model.query_tokens.copy_(torch.randn(model.query_tokens.shape, generator=g))
    model.eval()
    model.generation_config.pad_token_id = model.config.text_config.pad_token_id
    return model


def _blip_image_processor():
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    return BlipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})


def blip2(seed: int = 0, query_tokens: int = 8, lm: str = "opt"):
    """BLIP-2 layout (``blip-2``): ViT with fused qkv and [CLS], Q-Former, OPT (``lm="llama"``: Llama,
    ``lm="t5"``: an encoder-decoder T5 as in the FLAN-T5 checkpoints)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    tok = tokenizer()
    vision, qformer, text = _blip_parts(tok, query_tokens, lm)
    cfg = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                      num_query_tokens=query_tokens, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = _blip_finish(Blip2ForConditionalGeneration(cfg), seed)
    proc = Blip2Processor(image_processor=_blip_image_processor(), tokenizer=tok, num_query_tokens=query_tokens)
    return model, proc


def instructblip(seed: int = 0, query_tokens: int = 8):
    """InstructBLIP layout (``instructblip``): as BLIP-2, the Q-Former also reads the instruction; Llama (Vicuna)."""
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor

    tok = tokenizer()
    vision, qformer, text = _blip_parts(tok, query_tokens, "llama")
    cfg = InstructBlipConfig(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                             num_query_tokens=query_tokens, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = _blip_finish(InstructBlipForConditionalGeneration(cfg), seed)
    qtok = tokenizer()
    qtok.padding_side = "right"  # BERT-style, as the real Q-Former tokenizer
    proc = InstructBlipProcessor(image_processor=_blip_image_processor(), tokenizer=tok, qformer_tokenizer=qtok,
                                 num_query_tokens=query_tokens)
    return model, proc


def blip_prompt(question: str) -> str:
    return f"Question: {question} Answer:"
