"""Random-weight VLMs built from real ``transformers`` configs, with real processors.

For tests, the benchmark geometries and demos on machines that cannot download weights. Nothing
is downloaded: the tokenizer is a word-level ``tokenizers`` model wrapped in
``PreTrainedTokenizerFast``; image processors are the PIL ones (no torchvision). Accuracy measured
on these models means nothing; use them for mechanics, FLOPs and latency only. One module per
family; everything is importable from here (``from visprune import testing as T; T.llava()``).
"""

from .blip import blip2, blip_prompt, instructblip
from .common import IMAGE, PATCH, SPECIALS, WORDS, _clip_vision, _text_config, clip_model, images, prompt, tokenizer
from .gemma3 import gemma3, gemma3_prompt
from .idefics import idefics, idefics_prompts
from .idefics3 import idefics3, smolvlm
from .internvl import internvl, internvl_prompt
from .llava import BUILDERS, llava, llava_next, llava_next_video, llava_onevision, llava_processor, onevision_video, onevision_video_tokens
from .qwen import QWEN_SPECIALS, QwenInputs, qwen2_5_vl, qwen2_vl, qwen3_5, qwen3_5_moe, qwen3_vl, qwen3_vl_moe, qwen_prompt, qwen_tokenizer

__all__ = [
    "BUILDERS", "IMAGE", "PATCH", "QWEN_SPECIALS", "QwenInputs", "SPECIALS", "WORDS", "_clip_vision", "_text_config",
    "blip2", "blip_prompt", "clip_model", "gemma3", "gemma3_prompt", "idefics", "idefics3", "idefics_prompts", "images",
    "instructblip", "internvl", "internvl_prompt", "llava", "llava_next", "llava_next_video", "llava_onevision", "llava_processor", "onevision_video", "onevision_video_tokens", "prompt",
    "qwen2_5_vl", "qwen2_vl", "qwen3_5", "qwen3_5_moe", "qwen3_vl", "qwen3_vl_moe", "qwen_prompt", "qwen_tokenizer", "smolvlm", "tokenizer",
]
