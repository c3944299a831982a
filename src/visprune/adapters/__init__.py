"""One table maps ``config.model_type`` to its adapter; one small file per architecture."""

from __future__ import annotations

from torch import nn

from .base import Adapter, Encoded
from .blip2 import Blip2Adapter
from .gemma3 import Gemma3Adapter
from .idefics import IdeficsAdapter
from .idefics3 import Idefics3Adapter
from .instructblip import InstructBlipAdapter
from .internvl import InternVLAdapter
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter
from .llava_next_video import LlavaNextVideoAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
from .qwen3_5 import Qwen3_5Adapter
from .qwen3_vl import Qwen3VLAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "llava": LlavaAdapter,
    "llava_next": LlavaNextAdapter,
    "llava_next_video": LlavaNextVideoAdapter,
    "llava_onevision": LlavaOnevisionAdapter,
    "qwen2_vl": Qwen2VLAdapter,
    "qwen2_5_vl": Qwen2_5_VLAdapter,
    "qwen3_vl": Qwen3VLAdapter,
    "qwen3_vl_moe": Qwen3VLAdapter,
    "qwen3_5": Qwen3_5Adapter,
    "qwen3_5_moe": Qwen3_5Adapter,
    "blip-2": Blip2Adapter,
    "instructblip": InstructBlipAdapter,
    "idefics": IdeficsAdapter,
    "gemma3": Gemma3Adapter,
    "idefics3": Idefics3Adapter,
    "smolvlm": Idefics3Adapter,
    "internvl": InternVLAdapter,
}


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for ``model.config.model_type``; ``TypeError`` naming the supported types otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = ADAPTERS.get(model_type)
    if cls is None:
        raise TypeError(
            f"visprune does not support model type {model_type!r} ({type(model).__name__}); "
            f"supported: {', '.join(sorted(ADAPTERS))}"
        )
    has_head = hasattr(model, "lm_head") or hasattr(getattr(model, "language_model", None), "lm_head")  # BLIP-2
    if not hasattr(model, "generate") or not has_head:
        raise TypeError(
            f"pass the ...ForConditionalGeneration model, not {type(model).__name__} (model_type {model_type!r})"
        )
    adapter = cls()
    adapter.check(model)
    return adapter


__all__ = ["ADAPTERS", "Adapter", "Encoded", "get_adapter"]
