"""LLaVA-OneVision (``llava_onevision``): any-resolution crops, interpolated and packed.

Its SigLIP tower has no [CLS] token: the ``cls`` saliency falls back to received attention.
"""

from .llava_family import LlavaFamilyAdapter


class LlavaOnevisionAdapter(LlavaFamilyAdapter):
    model_types = ("llava_onevision",)
    packs = True
    one_grid = False  # crops packed with newline tokens
