"""BLIP-2 (``blip-2``): cut points ``query`` (default) and ``vit``; see ``blip2_family``."""

from __future__ import annotations

from ..measure.savings import Section
from .blip2_family import Blip2FamilyAdapter, blip_savings


class Blip2Adapter(Blip2FamilyAdapter):
    model_types = ("blip-2",)


def savings(tiny: bool) -> list[Section]:
    """BLIP-2 OPT-2.7b at both cut points (``blip2_family.blip_savings``)."""
    return blip_savings(tiny, instruct=False)
