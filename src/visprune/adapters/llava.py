"""LLaVA-1.5 (``llava``): one crop per image, fixed token count."""

from .llava_family import LlavaFamilyAdapter


class LlavaAdapter(LlavaFamilyAdapter):
    model_types = ("llava",)
    tower_space = True  # one crop: the tower's hidden states map one to one onto the placeholders
