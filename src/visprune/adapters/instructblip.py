"""InstructBLIP (``instructblip``): as BLIP-2, and the Q-Former also reads the instruction.

``qformer_input_ids`` / ``qformer_attention_mask`` are image inputs here: the ``query`` cut scores
the query outputs the Q-Former made while reading the instruction, and the ``vit`` cut lets the
Q-Former read it again over the kept patches. Cut points: see ``blip2_family``.
"""

from __future__ import annotations

from ..measure.savings import Section
from .blip2_family import Blip2FamilyAdapter, blip_savings


class InstructBlipAdapter(Blip2FamilyAdapter):
    model_types = ("instructblip",)
    image_input_keys = ("pixel_values", "qformer_input_ids", "qformer_attention_mask", "interpolate_pos_encoding")


def savings(tiny: bool) -> list[Section]:
    """InstructBLIP Vicuna-7B at both cut points (``blip2_family.blip_savings``); its Q-Former reads a 20-token
    instruction."""
    return blip_savings(tiny, instruct=True)
