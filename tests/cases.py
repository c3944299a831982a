"""One row per architecture set-up: how to build a tiny random model and its inputs.

Behaviour tests that every adapter must pass loop over ``CASES``; adding an architecture adds a
row here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from visprune import testing as T


@dataclass(frozen=True)
class Case:
    build: Callable[[], tuple]          # () -> (model, processor)
    kind: str                           # "placeholder" (one token per visual token), "blip", "idefics"
    image_size: tuple[int, int] = (T.IMAGE, T.IMAGE)
    config: dict = field(default_factory=dict)  # PruneConfig fields the set-up needs (BLIP-2's cut)

    def inputs(self, processor, images, questions):
        if self.kind == "idefics":
            return processor(text=T.idefics_prompts(images, questions), return_tensors="pt", padding=True)
        if self.kind == "blip":
            text = [T.blip_prompt(q) for q in questions]
        else:
            template = T.qwen_prompt if isinstance(processor, T.QwenInputs) else T.prompt
            text = [template(q) for q in questions]
        return processor(images=images, text=text, return_tensors="pt", padding=True)


CASES = {
    "llava": Case(T.llava, "placeholder"),
    "llava_next": Case(T.llava_next, "placeholder", (T.IMAGE, 2 * T.IMAGE)),
    "llava_onevision": Case(T.llava_onevision, "placeholder", (T.IMAGE, 2 * T.IMAGE)),
    "qwen2_vl": Case(T.qwen2_vl, "placeholder", (112, 168)),
    "qwen2_5_vl": Case(T.qwen2_5_vl, "placeholder", (112, 168)),
    "blip2-query": Case(T.blip2, "blip", config={"cut": "query"}),
    "blip2-vit": Case(T.blip2, "blip", config={"cut": "vit"}),
    "instructblip-query": Case(T.instructblip, "blip", config={"cut": "query"}),
    "idefics": Case(lambda: T.idefics(resampler=True), "idefics"),
    "idefics-noresampler": Case(lambda: T.idefics(resampler=False), "idefics"),
}
QUESTIONS = ["what colour is the star ?", "how many circle ?", "is there a dog ?"]


def module_state(model):
    """Every module's hooks and instance attributes: what a pruned call may touch and must restore."""
    return [(dict(m._forward_hooks), dict(m._forward_pre_hooks), sorted(vars(m))) for m in model.modules()]
