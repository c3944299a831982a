"""Random-weight VLMs built from real ``transformers`` configs, with real processors.

For tests, the benchmark geometries and demos on machines that cannot download weights. Nothing
is downloaded: the tokenizer is a word-level ``tokenizers`` model wrapped in
``PreTrainedTokenizerFast``; image processors are the PIL ones (no torchvision). Accuracy measured
on these models means nothing; use them for mechanics, FLOPs and latency only.

Nothing here knows an architecture: each adapter module declares its tiny model (``TINY``, a
:class:`visprune.adapters.tiny.Tiny` per ``model_type``: special tokens, config, model class, processor,
prompt), and :mod:`.build` turns every entry of the adapter table into a builder named after its
``model_type`` (``from visprune import testing as T; T.llava()``, ``T.gemma3(image=112)``, ``T.blip2(lm="t5")``).
A new architecture's adapter file and table row are enough for ``T.<model_type>()`` to exist. Here
live the shared pieces: images, the default prompt, the CLIP model for text partners, and the
family helpers' public names (``QwenInputs``, ``qwen_prompt``, ``llava_processor``...).
"""

from ..adapters.blip2 import blip_prompt
from ..adapters.idefics import idefics_prompts
from ..adapters.llava import llava_processor
from ..adapters.llava_onevision import onevision_video, onevision_video_tokens
from ..adapters.qwen_inputs import QWEN_SPECIALS, QwenInputs, qwen_prompt
from ..adapters.tiny import Tiny
from .build import BUILDERS as TINY_BUILDERS, PROMPTS, tiny_specs
from .common import IMAGE, PATCH, SPECIALS, WORDS, _clip_vision, _finish, _text_config, clip_model, images, prompt, tokenizer

globals().update(TINY_BUILDERS)  # T.llava, T.qwen2_vl, T.blip2, T.gemma3, ...
globals().update(PROMPTS)  # T.gemma3_prompt, T.internvl_prompt
BUILDERS = {name: TINY_BUILDERS[name] for name in ("llava", "llava_next", "llava_onevision")}  # the LLaVA family


def qwen_tokenizer():
    """The tokenizer of the tiny Qwen-VL models (the word-level one with Qwen's chat and vision markers)."""
    return tiny_specs()["qwen2_vl"].tokenizer()


__all__ = [
    "BUILDERS", "IMAGE", "PATCH", "PROMPTS", "QWEN_SPECIALS", "QwenInputs", "SPECIALS", "TINY_BUILDERS", "Tiny",
    "WORDS", "_clip_vision", "_finish", "_text_config", "blip_prompt", "clip_model", "idefics_prompts", "images",
    "llava_processor", "onevision_video", "onevision_video_tokens", "prompt", "qwen_prompt", "qwen_tokenizer",
    "tiny_specs", "tokenizer",
] + sorted(TINY_BUILDERS) + sorted(PROMPTS)
