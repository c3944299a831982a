"""LLaVA-NeXT / LLaVA-1.6 (``llava_next``): any-resolution crops, packed with newline tokens."""

from .llava_family import LlavaFamilyAdapter


class LlavaNextAdapter(LlavaFamilyAdapter):
    model_types = ("llava_next",)
    packs = True
    one_grid = False  # crops packed with newline tokens
    tells_crops = True  # unpadding only drops tokens: each packed token lies in one crop
    tower_crops = True  # VisionZip's official any-resolution path: every crop whole, in the tower's space
