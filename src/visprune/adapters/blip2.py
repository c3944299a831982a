"""BLIP-2 (``blip-2``): cut points ``query`` (default) and ``vit``; see ``blip2_family``."""

from .blip2_family import Blip2FamilyAdapter


class Blip2Adapter(Blip2FamilyAdapter):
    model_types = ("blip-2",)
