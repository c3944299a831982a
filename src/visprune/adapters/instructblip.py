"""InstructBLIP (``instructblip``): as BLIP-2, and the Q-Former also reads the instruction.

``qformer_input_ids`` / ``qformer_attention_mask`` are image inputs here: the ``query`` cut scores
the query outputs the Q-Former made while reading the instruction, and the ``vit`` cut lets the
Q-Former read it again over the kept patches. Cut points: see ``blip2_family``.
"""

from __future__ import annotations

from ..measure.savings import Section
from .blip2 import tiny_fields, tiny_image_processor, tiny_init
from .blip2_family import Blip2FamilyAdapter, blip_savings
from .tiny import Tiny, word_tokenizer


class InstructBlipAdapter(Blip2FamilyAdapter):
    model_types = ("instructblip",)
    image_input_keys = ("pixel_values", "qformer_input_ids", "qformer_attention_mask", "interpolate_pos_encoding")


def savings(tiny: bool) -> list[Section]:
    """InstructBLIP Vicuna-7B at both cut points (``blip2_family.blip_savings``); its Q-Former reads a 20-token
    instruction."""
    return blip_savings(tiny, instruct=True)


def _tiny_config(tok, query_tokens: int = 8):
    """InstructBLIP layout (``instructblip``): as BLIP-2, the Q-Former also reads the instruction; Llama (Vicuna)."""
    from transformers import InstructBlipConfig

    return InstructBlipConfig(**tiny_fields(tok, query_tokens, "llama"))


def _tiny_processor(tok, config, **_):
    from transformers import InstructBlipProcessor

    qtok = word_tokenizer()
    qtok.padding_side = "right"  # BERT-style, as the real Q-Former tokenizer
    return InstructBlipProcessor(image_processor=tiny_image_processor(), tokenizer=tok, qformer_tokenizer=qtok,
                                 num_query_tokens=config.num_query_tokens)


TINY = {"instructblip": Tiny("InstructBlipForConditionalGeneration", _tiny_config, _tiny_processor, init=tiny_init)}
