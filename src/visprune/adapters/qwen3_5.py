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

import math

from ..measure.savings import KEEPS, TEXT_TOKENS, Section, after_connector, build, kept, prefill
from .qwen2_vl import Qwen2VLAdapter
from .qwen_inputs import QWEN3_VISION, qwen_tiny
from .qwen3_vl import tower_flops


class Qwen3_5Adapter(Qwen2VLAdapter):
    model_types = ("qwen3_5", "qwen3_5_moe")


_SOURCE_27B = (
    "language model as THUDM/slime's scripts/models/qwen3.5-27B.sh gives it (the same file in radixark/miles and "
    "vllm-project/vime): 64 layers of width 5120, FFN 17408, gated attention with 24 query / 4 KV heads of 256, "
    "rotary on 25% of each head (base 1e7), vocabulary 248320, untied embeddings. The 3:1 layout (16 x (3 Gated "
    "DeltaNet + 1 full attention), full_attention_interval 4) and the tower's 27 blocks of width 1152 with 16 px "
    "patches and M-RoPE sections 11 / 11 / 10: the TevunahAi/Qwen3.5-27B-TevunahAi-GPTQ model card; 48 linear-"
    "attention value heads with a 128 x 128 state each: the cumulus blog 'Day-0 Support for the Qwen3.5 Family' "
    "(cumulus-blog-14a.pages.dev/qwen35-gated-delta-rule). Not confirmed by a named 27B-specific file, taken "
    "from copies of the checkpoint's config.json in public code that the search index does not name (which agree "
    "with every value above): 16 linear-attention key heads, key / value head dims 128, conv kernel 4 (the family "
    "values of slime's qwen3.5-35B-A3B.sh, InternLM/xtuner's Qwen3.5-4B config and transformers' "
    "Qwen3_5TextConfig defaults), and the tower's FFN 4304, 16 heads and 2304 position embeddings (transformers "
    "5.24's Qwen3_5VisionConfig defaults, p-doom/omegalax's Qwen3_5VisionConfig); out_hidden_size 5120 is the "
    "language model's width the merger feeds"
)


def savings(tiny: bool) -> list[Section]:
    """Qwen3.5-27B (dense) on a 672x672 image: 42x42 patches of 16 px -> 21x21 = 441 merged tokens, pruned after
    the patch merger; a hybrid language model of Gated DeltaNet and gated full-attention layers (3:1)."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    rope = {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25, "mrope_interleaved": True}
    if tiny:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, vocab_size=1000, linear_num_key_heads=2,
                    linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4,
                    full_attention_interval=4, rope_parameters={**rope, "mrope_section": [1, 1, 0]})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64)
        image = 128
    else:
        text = dict(hidden_size=5120, intermediate_size=17408, num_hidden_layers=64, num_attention_heads=24,
                    num_key_value_heads=4, head_dim=256, vocab_size=248320, max_position_embeddings=262144,
                    linear_num_key_heads=16, linear_num_value_heads=48, linear_key_head_dim=128,
                    linear_value_head_dim=128, linear_conv_kernel_dim=4, full_attention_interval=4,
                    tie_word_embeddings=False, rope_parameters={**rope, "mrope_section": [11, 11, 10]})
        vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=5120,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304)
        image = 672
    cfg = Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=False)
    m = build(Qwen3_5ForConditionalGeneration, cfg)
    by_module, n = tower_flops(m.model.visual, image)
    connector = by_module.get("merger", 0)
    tc = cfg.text_config
    rows = after_connector(n, by_module["total"] - connector, connector,
                           lambda length: prefill(m.model.language_model, m.lm_head, tc.hidden_size, length))
    linear = tc.layer_types.count("linear_attention")
    solves = [_triangular_solve_flops(tc, TEXT_TOKENS + kept(n, keep)) * linear for keep in KEEPS]
    note = (f"the {linear} Gated DeltaNet layers are counted as transformers 5.24 runs them without the "
            "flash-linear-attention kernels (torch_chunk_gated_delta_rule: projections, depthwise causal conv, and the "
            "chunked delta rule's matmuls over the prompt padded to chunks of 64). Not counted: its two unit-triangular "
            "solves per head and chunk (torch.linalg.solve_triangular, for which torch's FLOP counter has no formula), "
            f"about {solves[0] / 1e9:,.1f} GFLOP at keep 1 ({solves[0] / rows[0].lm:.2%} of the language-model "
            f"prefill) and {solves[-1] / 1e9:,.1f} GFLOP at keep {KEEPS[-1]:g}, by the formula "
            "heads x chunks x 64 x 63 x (key dim + value dim); nor the multi-token-prediction layer, which generate "
            "does not run.")
    return [Section("Qwen3.5-27B", f"{n} merged tokens ({image}x{image} image), pruned after the patch merger", rows,
                    source=_SOURCE_27B, note=note)]


def _triangular_solve_flops(text_config, length: int, chunk: int = 64) -> int:
    """FLOPs of the two unit-lower-triangular solves one Gated DeltaNet layer makes over a prompt of ``length``
    (``torch_chunk_gated_delta_rule``): per value head and chunk, ``chunk x (chunk - 1) / 2`` multiply-adds per
    right-hand-side column, for the values and for the decayed keys."""
    chunks = math.ceil(length / chunk)
    columns = text_config.linear_value_head_dim + text_config.linear_key_head_dim
    return text_config.linear_num_value_heads * chunks * chunk * (chunk - 1) * columns


# hybrid language model: a linear-attention (Gated DeltaNet) layer, then a full one
_HYBRID = dict(head_dim=8, layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
               linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
               rope={"mrope_interleaved": True, "partial_rotary_factor": 1.0})
TINY = {
    "qwen3_5": qwen_tiny("Qwen3_5Config", "Qwen3_5ForConditionalGeneration", QWEN3_VISION, **_HYBRID,
                         doc="Qwen3.5 layout: Qwen3-VL's tower without DeepStack, a hybrid language model."),
    # the same hybrid, its MLPs a mixture of experts (4 experts, 2 per token, one shared)
    "qwen3_5_moe": qwen_tiny("Qwen3_5MoeConfig", "Qwen3_5MoeForConditionalGeneration", QWEN3_VISION, **_HYBRID,
                             moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4,
                             num_experts_per_tok=2, drop=("intermediate_size",),
                             doc="Qwen3.5-MoE layout: the hybrid with 4 experts, 2 per token, one shared."),
}
