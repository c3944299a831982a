"""Qwen3.5 (``qwen3_5``, ``qwen3_5_moe``): Qwen2-VL's visual path, a hybrid language model.

The tower is Qwen3-VL's without DeepStack (no [CLS], 2x2 patch merger, 3-D M-RoPE positions,
which the kept tokens keep): :class:`~visprune.adapters.qwen2_vl.Qwen2VLAdapter` does all of it,
saliency included (attention each patch receives in the scoring block). The language model
interleaves linear-attention layers (Gated DeltaNet, a recurrent state) with full-attention
layers; pre-LLM pruning shortens the prompt both kinds read, so it needs nothing of its own (the
shared behaviour tests check that the pruned prompt gives the same answers batched as alone, the
recurrent layers included). In-LLM methods are refused at ``prune_`` (``check_attention``: their
hooks do not rebuild a recurrent state).
"""

from __future__ import annotations

from .qwen2_vl import Qwen2VLAdapter


class Qwen3_5Adapter(Qwen2VLAdapter):
    model_types = ("qwen3_5", "qwen3_5_moe")
