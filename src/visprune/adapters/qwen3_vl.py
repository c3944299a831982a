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

from ..measure.savings import META, Section, after_connector, build, flops_by_module, meta, prefill
from .qwen2_vl import Qwen2VLAdapter
from .qwen_inputs import QWEN3_VISION, qwen_tiny


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


# --- savings at published size (docs/savings.md, visprune.measure.savings) ---


def tower_flops(tower: nn.Module, image: int) -> tuple[dict[str, int], int]:
    """Counted FLOPs of a Qwen3-VL-kind tower (also Qwen3.5's) on one ``image`` x ``image`` picture, by module,
    and the merged token count. Positions and the position-embedding interpolation come from the (real)
    grid and are handed over on meta, as the tower's own helpers allow."""
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

    patch, merge = tower.config.patch_size, tower.config.spatial_merge_size
    g = image // patch
    grid = torch.tensor([[1, g, g]])
    indices, weights = get_vision_interpolation_indices_and_weights(
        grid, num_grid_per_side=tower.num_grid_per_side, mode=tower.interpolation_mode,
        align_corners=tower.interpolation_align_corners, spatial_merge_size=merge)
    by_module = flops_by_module(tower, meta(g * g, 3 * tower.config.temporal_patch_size * patch * patch), grid_thw=grid,
                                position_ids=get_vision_position_ids(grid, merge).to(META),
                                interp_indices=indices.to(META), interp_weights=weights.to(META))
    return by_module, g * g // (merge * merge)


def savings(tiny: bool) -> list[Section]:
    """Qwen3-VL-4B and 8B (Instruct) on a 672x672 image: 42x42 patches of 16 px -> 21x21 = 441 merged tokens; the
    DeepStack mergers are counted with the patch merger as the connector."""
    four_text = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8)
    four_tower = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                      deepstack_visual_indexes=[5, 11, 17])
    eight_text = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                      num_key_value_heads=8)
    eight_tower = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                       deepstack_visual_indexes=[8, 16, 24])
    eight_source = ("Qwen/Qwen3-VL-8B-Instruct's config.json as pytorch/torchtitan writes it out "
                    "(torchtitan/experiments/qwen3_vl/__init__.py, flavor \"8B\": width 4096, 36 layers, FFN 12288, "
                    "32 / 8 heads of 128, vocabulary 151936, rope base 5e6, M-RoPE 24 / 20 / 20; tower 27 blocks of "
                    "1152, FFN 4304, 16 heads, 16 px patches, 2304 position embeddings, DeepStack 8 / 16 / 24, out 4096); "
                    "the copies of the checkpoint's config.json found in public code (files the search index does not "
                    "name) give the same values")
    return [_qwen3_vl(tiny, "Qwen3-VL-4B", four_text, four_tower, "Qwen/Qwen3-VL-4B-Instruct's config.json"),
            _qwen3_vl(tiny, "Qwen3-VL-8B", eight_text, eight_tower, eight_source)]


def _qwen3_vl(tiny: bool, name: str, text_size: dict, vision_size: dict, source: str) -> Section:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    if tiny:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, vocab_size=1000,
                    rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                     "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0])
        image = 128
    else:
        text = dict(**text_size, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                    rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                     "mrope_interleaved": True})
        vision = dict(**vision_size, out_hidden_size=text_size["hidden_size"], patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, num_position_embeddings=2304)
        image = 672
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision)
    m = build(Qwen3VLForConditionalGeneration, cfg)
    by_module, n = tower_flops(m.model.visual, image)
    connector = by_module.get("merger", 0) + by_module.get("deepstack_merger_list", 0)
    width = cfg.text_config.hidden_size
    rows = after_connector(n, by_module["total"] - connector, connector,
                           lambda length: prefill(m.model.language_model, m.lm_head, width, length))
    return Section(name, f"{n} merged tokens ({image}x{image} image), pruned after the patch merger; their DeepStack "
                   "features are gathered at the same indices", rows, source=source)


_DEEPSTACK = dict(QWEN3_VISION, deepstack_visual_indexes=[0, 1])
TINY = {  # interleaved M-RoPE, QK-norm language model, DeepStack after tower blocks 0 and 1
    "qwen3_vl": qwen_tiny("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", _DEEPSTACK, head_dim=8,
                          rope={"mrope_interleaved": True}, doc="Qwen3-VL layout: DeepStack, QK-norm Qwen3 LM."),
    # the same, with a mixture-of-experts language model (4 experts, 2 per token)
    "qwen3_vl_moe": qwen_tiny("Qwen3VLMoeConfig", "Qwen3VLMoeForConditionalGeneration", _DEEPSTACK, head_dim=8,
                              moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                              rope={"mrope_interleaved": True}, doc="Qwen3-VL-MoE layout: 4 experts, 2 per token."),
}
