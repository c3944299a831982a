"""Qwen3-VL (``qwen3_vl``, ``qwen3_vl_moe``): Qwen2-VL's path plus the DeepStack features.

The tower is Qwen2-VL's kind (no [CLS], 2x2 patch merger, M-RoPE positions, which the kept tokens
keep: :class:`~visprune.adapters.qwen2_vl.Qwen2VLAdapter`), and the saliency is defined the same
way (attention each patch receives in the scoring block, averaged over the merged 2x2). What is
its own: ``get_image_features`` also returns DeepStack features, one ``[N_i, D]`` per image for each
of a few tower layers (``deepstack_visual_indexes``), which the language model adds to the visual
positions' hidden states in its first layers (``Qwen3VLTextModel._deepstack_process``, over
``visual_pos_masks``). Pruned, each image's DeepStack features are gathered at the same kept
indices as its tokens, so layer ``l`` still adds feature ``j`` to token ``j``. Scorers that merge
tokens (VisionZip's projected variant, pooling) put merged tokens at kept positions; their
DeepStack features are those of the kept index, not merged (stated, not measured).

The language model is Qwen3's (QK-norm): in-LLM methods are refused (``check_attention``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from .qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    model_types = ("qwen3_vl", "qwen3_vl_moe")

    def other_outputs(self, out: Any) -> dict:
        return {"deepstack": [list(layer) for layer in out.deepstack_features]}  # [layer][image] -> [N_i, D]

    def apply(self, model: nn.Module, sel: Any, kwargs: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              image_inputs: dict, side: str | None) -> tuple[dict, AbstractContextManager]:
        """Qwen2-VL's rebuild (kept M-RoPE positions), with each DeepStack layer's features gathered at
        the kept indices and handed over with the kept tokens."""
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        kwargs, ctx = super().apply(model, sel, kwargs, input_ids, attention_mask, image_inputs, side)
        kinds = sel.modalities
        outputs = {}
        for kind, feats in sel.kept_features_by_kind().items():  # images, then videos: each scattered on its own
            entries = [i for i, k in enumerate(kinds) if k == kind]
            deep = [[layer[i][sel.kept[i].to(layer[i].device)] for i in entries]
                    for layer in sel.encoded.extras["deepstack"]]
            outputs[kind] = BaseModelOutputWithDeepstackFeatures(pooler_output=feats, deepstack_features=deep)
        kwargs["mm_encoder_outputs"] = outputs
        return kwargs, ctx
