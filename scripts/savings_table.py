"""Write ``docs/savings.md``: counted FLOPs of real-size VLMs at keep ratios 1.0 / 0.5 / 0.25.

    python scripts/savings_table.py                  # all architectures -> docs/savings.md
    python scripts/savings_table.py --tiny --out -   # tiny configs, to stdout (what the test runs)

Every number is *counted* with :func:`visprune.measure.flops.count_flops_by_module` on models built on the
``meta`` device (real shapes, no weights, nothing downloaded; configs written out below from the
published ``config.json`` values). Pruning code reads values, which meta tensors do not have, so
the script runs the *stock* modules at the sizes the pruned model really gives them: the vision
tower on the full image, the connector and the language-model prefill on the kept token counts
(cut points as visprune's adapters implement them). Scoring and selection themselves are not
counted (they are O(N*D) per image and not a matmul workload worth listing).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")

from visprune import ops  # noqa: E402
from visprune.compat import idefics_perceiver_embeddings  # noqa: E402
from visprune.evaluation.tables import markdown_table  # noqa: E402
from visprune.measure.flops import count_flops_by_module  # noqa: E402

KEEPS = (1.0, 0.5, 0.25)
TEXT_TOKENS = 40  # a VQA prompt with its chat template
META = torch.device("meta")


def flops(fn: Callable, *args, **kwargs) -> int:
    with torch.no_grad():
        by_module, _ = count_flops_by_module(fn, *args, **kwargs)
    return by_module["total"]


def _meta(*shape) -> torch.Tensor:
    return torch.empty(*shape, device=META)


def _build(cls, cfg):
    with torch.device("meta"):
        return cls(cfg).eval()


def _kept(n: int, keep: float) -> int:
    return int(ops.ratio_budget(n, keep))  # the `ratio` budget's rounding


def _prefill(model, lm, head, width: int, length: int) -> int:
    """Decoder stack over the whole prompt plus the head on its last position (generate's prefill)."""
    return flops(lm, inputs_embeds=_meta(1, length, width)) + flops(head, _meta(1, 1, width))


@dataclass
class Row:
    keep: float
    at_cut: int  # visual tokens at the cut point
    lm_visual: int  # visual tokens (or latents) the language model receives
    vision: int
    connector: int
    lm: int

    @property
    def total(self) -> int:
        return self.vision + self.connector + self.lm


# --- configs (published config.json values; --tiny shrinks every width and depth) ----------------


def _llama(tiny: bool, vocab: int = 32000, **extra):
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           vocab_size=vocab, **extra)
    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=vocab, max_position_embeddings=4096, **extra)


def _clip_l336(tiny: bool):
    from transformers import CLIPVisionConfig

    if tiny:
        return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=56, patch_size=14)
    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=336, patch_size=14, projection_dim=768)


def llava(tiny: bool) -> tuple[str, str, list[Row]]:
    """LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf): CLIP-L/336, 2-layer MLP projector, Vicuna-7B."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    vis = _clip_l336(tiny)
    cfg = LlavaConfig(vision_config=vis, text_config=_llama(tiny, 32064), image_token_id=32000,
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    m = _build(LlavaForConditionalGeneration, cfg)
    side = vis.image_size // vis.patch_size
    n = side * side
    vision = flops(m.model.vision_tower, _meta(1, 3, vis.image_size, vis.image_size), output_hidden_states=True)
    connector = flops(m.model.multi_modal_projector, _meta(1, n, vis.hidden_size))
    width = cfg.text_config.hidden_size
    rows = [Row(keep, _kept(n, keep), _kept(n, keep), vision, connector,
                _prefill(m, m.model.language_model, m.lm_head, width, TEXT_TOKENS + _kept(n, keep))) for keep in KEEPS]
    return "LLaVA-1.5-7B", f"{n} projected patch tokens, pruned after the projector", rows


def llava_next(tiny: bool) -> tuple[str, str, list[Row]]:
    """LLaVA-NeXT-7B (llava-hf/llava-v1.6-vicuna-7b-hf) on a 672x672 image: base + 2x2 crops, 5 CLIP passes."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    vis = _clip_l336(tiny)
    s = vis.image_size
    cfg = LlavaNextConfig(vision_config=vis, text_config=_llama(tiny, 32064), image_token_id=32000,
                          vision_feature_layer=-2, vision_feature_select_strategy="default",
                          image_grid_pinpoints=[[s, 2 * s], [2 * s, s], [2 * s, 2 * s], [s, 3 * s], [3 * s, s]])
    m = _build(LlavaNextForConditionalGeneration, cfg)
    side = s // vis.patch_size
    crops = 5
    content = crops * side * side  # base 24x24 + the 2x2 crops as one 48x48 grid (no unpadding on a square image)
    newlines = 2 * side  # one per row of the 48x48 grid, protected (always kept)
    vision = flops(m.model.vision_tower, _meta(crops, 3, s, s), output_hidden_states=True)
    connector = flops(m.model.multi_modal_projector, _meta(1, content, vis.hidden_size))
    width = cfg.text_config.hidden_size
    rows = []
    for keep in KEEPS:
        k = _kept(content, keep) + newlines
        rows.append(Row(keep, k, k, vision, connector,
                        _prefill(m, m.model.language_model, m.lm_head, width, TEXT_TOKENS + k)))
    return ("LLaVA-NeXT-7B (Vicuna)", f"{content} + {newlines} newline tokens (672x672 image), pruned after the "
            "projector; newline tokens protected", rows)


def qwen2_vl(tiny: bool) -> tuple[str, str, list[Row]]:
    """Qwen2-VL-7B-Instruct on a 672x672 image: 48x48 patches -> 24x24 = 576 merged tokens."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    if tiny:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=1000,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
        vision = dict(depth=2, embed_dim=32, num_heads=4, hidden_size=64, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        image = 112
    else:
        text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                    num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
        vision = dict(depth=32, embed_dim=1280, num_heads=16, hidden_size=3584, mlp_ratio=4, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        image = 672
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
                        vision_start_token_id=151652, vision_end_token_id=151653)
    m = _build(Qwen2VLForConditionalGeneration, cfg)
    g = image // 14
    patches = g * g
    n = patches // 4
    grid = torch.tensor([[1, g, g]])
    pixels = _meta(patches, 3 * 2 * 14 * 14)
    from transformers.vision_utils import get_vision_position_ids

    # Rotary positions come from the (real) grid; hand them over on meta, as the tower's own helper allows.
    positions = get_vision_position_ids(grid, cfg.vision_config.spatial_merge_size).to(META)
    with torch.no_grad():
        by_module, _ = count_flops_by_module(m.model.visual, pixels, grid_thw=grid, position_ids=positions)
    connector = by_module.get("merger", 0)
    vision = by_module["total"] - connector
    width = cfg.text_config.hidden_size
    rows = [Row(keep, _kept(n, keep), _kept(n, keep), vision, connector,
                _prefill(m, m.model.language_model, m.lm_head, width, TEXT_TOKENS + _kept(n, keep))) for keep in KEEPS]
    return "Qwen2-VL-7B", f"{n} merged tokens (672x672 image), pruned after the patch merger", rows


def qwen3_vl(tiny: bool) -> tuple[str, str, list[Row]]:
    """Qwen3-VL-4B-Instruct on a 672x672 image: 42x42 patches of 16 px -> 21x21 = 441 merged tokens; the
    DeepStack mergers (tower blocks 5, 11, 17) are counted with the patch merger as the connector."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

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
        text = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                    rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                     "mrope_interleaved": True})
        vision = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2560,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                      deepstack_visual_indexes=[5, 11, 17])
        image = 672
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision)
    m = _build(Qwen3VLForConditionalGeneration, cfg)
    tower = m.model.visual
    g = image // 16
    n = g * g // 4
    grid = torch.tensor([[1, g, g]])
    # positions and the position-embedding interpolation come from the (real) grid; handed over on meta
    indices, weights = get_vision_interpolation_indices_and_weights(
        grid, num_grid_per_side=tower.num_grid_per_side, mode=tower.interpolation_mode,
        align_corners=tower.interpolation_align_corners, spatial_merge_size=2)
    with torch.no_grad():
        by_module, _ = count_flops_by_module(tower, _meta(g * g, 3 * 2 * 16 * 16), grid_thw=grid,
                                             position_ids=get_vision_position_ids(grid, 2).to(META),
                                             interp_indices=indices.to(META), interp_weights=weights.to(META))
    connector = by_module.get("merger", 0) + by_module.get("deepstack_merger_list", 0)
    width = cfg.text_config.hidden_size
    rows = [Row(keep, _kept(n, keep), _kept(n, keep), by_module["total"] - connector, connector,
                _prefill(m, m.model.language_model, m.lm_head, width, TEXT_TOKENS + _kept(n, keep))) for keep in KEEPS]
    return ("Qwen3-VL-4B", f"{n} merged tokens ({image}x{image} image), pruned after the patch merger; their DeepStack "
            "features are gathered at the same indices", rows)


def qwen2_5_vl_video(tiny: bool) -> tuple[str, str, list[Row]]:
    """Qwen2.5-VL-7B-Instruct on a 32-frame clip at 448x448 per frame: 2 frames per temporal patch, 32x32
    patches per frame -> 16 temporal groups x 16x16 = 4,096 merged tokens, pruned within the video."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

    if tiny:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=1000,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=56,
                      fullatt_block_indexes=[1])
        frames, image = 4, 112
    else:
        text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                    num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
        vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=112,
                      fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
        frames, image = 32, 448
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
                           vision_start_token_id=151652, vision_end_token_id=151653)
    m = _build(Qwen2_5_VLForConditionalGeneration, cfg)
    g = image // 14
    t = frames // 2
    n = t * g * g // 4
    grid = torch.tensor([[t, g, g]])
    pixels = _meta(t * g * g, 3 * 2 * 14 * 14)
    # rotary positions and the window layout come from the (real) grid; handed over on meta
    positions = get_vision_position_ids(grid, 2).to(META)
    window, cu_window = get_vision_window_index(grid, spatial_merge_size=2, window_size=cfg.vision_config.window_size,
                                                patch_size=14)
    with torch.no_grad():
        by_module, _ = count_flops_by_module(m.model.visual, pixels, grid_thw=grid, position_ids=positions,
                                             window_index=window.to(META), cu_window_seqlens=cu_window)
    connector = by_module.get("merger", 0)
    width = cfg.text_config.hidden_size
    rows = [Row(keep, _kept(n, keep), _kept(n, keep), by_module["total"] - connector, connector,
                _prefill(m, m.model.language_model, m.lm_head, width, TEXT_TOKENS + _kept(n, keep))) for keep in KEEPS]
    return (f"Qwen2.5-VL-7B, {frames}-frame video", f"{n} merged tokens ({frames} frames of {image}x{image}: {t} "
            f"temporal patches of {g // 2}x{g // 2}), pruned after the patch merger within the video; the vision "
            "tower runs on the whole clip", rows)


def _blip_configs(tiny: bool, instruct: bool):
    from transformers import OPTConfig

    if tiny:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      image_size=56, patch_size=14)
        qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       vocab_size=1000)
        text = _llama(True) if instruct else OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                                       num_attention_heads=4, word_embed_proj_dim=64, vocab_size=1000)
        return vision, qformer, text, 8
    vision = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                  image_size=224, patch_size=14, qkv_bias=True)
    qformer = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   cross_attention_frequency=2, encoder_hidden_size=1408, vocab_size=30523 if instruct else 30522)
    if instruct:  # Vicuna-7B v1.1
        text = _llama(False, 32001)
    else:  # OPT-2.7b
        text = OPTConfig(hidden_size=2560, ffn_dim=10240, num_hidden_layers=32, num_attention_heads=32,
                         word_embed_proj_dim=2560, vocab_size=50272, max_position_embeddings=2048)
    return vision, qformer, text, 32


def _blip(tiny: bool, instruct: bool) -> list[tuple[str, str, list[Row]]]:
    if instruct:
        from transformers import InstructBlipConfig as Config, InstructBlipForConditionalGeneration as Model
    else:
        from transformers import Blip2Config as Config, Blip2ForConditionalGeneration as Model
    vision, qformer, text, queries = _blip_configs(tiny, instruct)
    cfg = Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(), num_query_tokens=queries,
                 image_token_index=text.vocab_size - 1)
    m = _build(Model, cfg)
    s, p = cfg.vision_config.image_size, cfg.vision_config.patch_size
    patches = (s // p) ** 2
    vision_f = flops(m.vision_model, _meta(1, 3, s, s))
    qh = cfg.qformer_config.hidden_size
    instruction = 20  # Q-Former tokens of the instruction (InstructBLIP reads it; BLIP-2 does not)

    def connector(n_patches: int) -> int:
        kwargs = dict(query_embeds=_meta(1, queries, qh), encoder_hidden_states=_meta(1, n_patches, cfg.vision_config.hidden_size))
        if instruct:
            ids = torch.zeros(1, instruction, dtype=torch.long, device=META)
            kwargs.update(input_ids=ids)  # no mask: all attend (a meta mask cannot be inspected)
        return flops(m.qformer, **kwargs) + flops(m.language_projection, _meta(1, queries, qh))

    width = cfg.text_config.hidden_size
    lm = m.language_model
    head = lm.lm_head
    body = lm.model.decoder if hasattr(lm.model, "decoder") else lm.model
    full_connector = connector(patches + 1)
    query_rows, vit_rows = [], []
    for keep in KEEPS:
        k = _kept(queries, keep)
        query_rows.append(Row(keep, k, k, vision_f, full_connector, _prefill(m, body, head, width, TEXT_TOKENS + k)))
        n = _kept(patches, keep) + 1  # [CLS] protected
        vit_rows.append(Row(keep, n, queries, vision_f, connector(n), _prefill(m, body, head, width, TEXT_TOKENS + queries)))
    name = "InstructBLIP Vicuna-7B" if instruct else "BLIP-2 OPT-2.7b"
    return [
        (f"{name}, cut='query'", f"{queries} projected Q-Former query outputs, pruned before the language model", query_rows),
        (f"{name}, cut='vit'", f"{patches} ViT patches + [CLS] (protected), pruned before the Q-Former; the language "
         f"model still receives {queries} query tokens", vit_rows),
    ]


def blip2(tiny: bool):
    return _blip(tiny, instruct=False)


def instructblip(tiny: bool):
    return _blip(tiny, instruct=True)


def idefics(tiny: bool) -> tuple[str, str, list[Row]]:
    """IDEFICS-9B (HuggingFaceM4/idefics-9b): CLIP ViT-H/14, perceiver resampler (64 latents), LLaMA-7B + 8 gated xattn."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text

    if tiny:
        cfg = IdeficsConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            vocab_size=1000, additional_vocab_size=2, cross_layer_interval=1, use_resampler=True,
                            vision_config=dict(embed_dim=32, image_size=56, intermediate_size=64, patch_size=14,
                                               num_attention_heads=4, num_hidden_layers=2),
                            perceiver_config=dict(use_resampler=True, resampler_n_latents=8, resampler_depth=2,
                                                  resampler_n_heads=4, resampler_head_dim=8))
    else:
        cfg = IdeficsConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                            vocab_size=32000, additional_vocab_size=2, cross_layer_interval=4, use_resampler=True,
                            qk_layer_norms=False, max_position_embeddings=2048,
                            vision_config=dict(embed_dim=1280, image_size=224, intermediate_size=5120, patch_size=14,
                                               num_attention_heads=16, num_hidden_layers=32),
                            perceiver_config=dict(use_resampler=True, resampler_n_latents=64, resampler_depth=6,
                                                  resampler_n_heads=16, resampler_head_dim=96))
    # IDEFICS always builds a padding mask, which the SDPA mask code inspects (impossible on meta):
    # count with eager attention, whose matmuls torch counts exactly as the SDPA formula does.
    cfg._attn_implementation = "eager"
    m = _build(IdeficsForVisionText2Text, cfg)
    vc = cfg.vision_config
    patches = (vc.image_size // vc.patch_size) ** 2
    latents = cfg.perceiver_config.resampler_n_latents
    vision = flops(m.model.vision_model, _meta(1, 3, vc.image_size, vc.image_size))
    length = TEXT_TOKENS
    lm = flops(m.model, inputs_embeds=_meta(1, length, cfg.hidden_size),
               perceiver_embeddings=idefics_perceiver_embeddings(_meta(1, 1, latents, vc.embed_dim)),
               image_attention_mask=torch.ones(1, length, 1, device=META)) + flops(m.lm_head, _meta(1, 1, cfg.hidden_size))
    rows = []
    for keep in KEEPS:
        n = _kept(patches, keep) + 1  # [CLS] protected
        rows.append(Row(keep, n, latents, vision, flops(m.model.perceiver_resampler, _meta(1, n, vc.embed_dim)), lm))
    return ("IDEFICS-9B", f"{patches} ViT patches + [CLS] (protected), pruned before the perceiver resampler; the "
            f"language model cross-attends to {latents} latents whatever is kept", rows)


def _gemma3(tiny: bool, name: str, width: int, ffn: int, layers: int, heads: int, kv: int) -> tuple[str, str, list[Row]]:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    if tiny:
        text = Gemma3TextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=64)
        vis = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 image_size=112, patch_size=14)
        tokens = 16
    else:
        text = Gemma3TextConfig(vocab_size=262208, hidden_size=width, intermediate_size=ffn, num_hidden_layers=layers,
                                num_attention_heads=heads, num_key_value_heads=kv, head_dim=256, sliding_window=1024,
                                query_pre_attn_scalar=256)
        vis = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                 image_size=896, patch_size=14, vision_use_head=False)
        tokens = 256
    cfg = Gemma3Config(text_config=text, vision_config=vis, mm_tokens_per_image=tokens,
                       image_token_id=text.vocab_size - 1)
    m = _build(Gemma3ForConditionalGeneration, cfg)
    patches = (vis.image_size // vis.patch_size) ** 2
    vision = flops(m.model.vision_tower, _meta(1, 3, vis.image_size, vis.image_size))
    connector = flops(m.model.multi_modal_projector, _meta(1, patches, vis.hidden_size))
    rows = [Row(keep, _kept(tokens, keep), _kept(tokens, keep), vision, connector,
                _prefill(m, m.model.language_model, m.lm_head, text.hidden_size, TEXT_TOKENS + 2 + _kept(tokens, keep)))
            for keep in KEEPS]
    return name, (f"{tokens} tokens pooled from {patches} SigLIP patches, pruned after the projector; "
                  "<start_of_image> / <end_of_image> kept"), rows


def gemma3(tiny: bool) -> list[tuple[str, str, list[Row]]]:
    """Gemma-3-4B and 12B (google/gemma-3-4b-it, google/gemma-3-12b-it) on one 896x896 image (no pan and scan):
    SigLIP-so400m, 4x4 average pool into 256 tokens, Gemma 3 language models (sliding-window and global layers)."""
    return [_gemma3(tiny, "Gemma-3-4B", 2560, 10240, 34, 8, 4), _gemma3(tiny, "Gemma-3-12B", 3840, 15360, 48, 16, 8)]


def _internvl(tiny: bool, tiles: int) -> tuple[str, str, list[Row]]:
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    if tiny:
        text = dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
        vis = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=112,
                   patch_size=14)
        image_token = 999
    else:
        # OpenGVLab/InternVL3-8B-hf: text_config is InternVL3-8B's llm_config (Qwen2.5-7B with InternVL's
        # tokens), vision_config InternViT-300M-448px-V2.5 as transformers' conversion writes it
        text = dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                    num_attention_heads=28, num_key_value_heads=4, vocab_size=151674, max_position_embeddings=32768,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6})
        vis = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=448, patch_size=14, attention_bias=True, norm_type="layer_norm", use_qk_norm=False,
                   use_mean_pooling=True)
        image_token = 151667
    cfg = InternVLConfig(text_config=text, vision_config=vis, image_token_id=image_token, downsample_ratio=0.5,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    m = _build(InternVLForConditionalGeneration, cfg)
    size = vis["image_size"]
    patches = (size // 14) ** 2
    n = tiles * patches // 4  # the pixel shuffle: 2 x 2 patches per token
    vision = flops(m.model.vision_tower, _meta(tiles, 3, size, size))
    connector = flops(m.model.multi_modal_projector, _meta(tiles, patches // 4, 4 * vis["hidden_size"]))
    width = text["hidden_size"]
    rows = [Row(keep, _kept(n, keep), _kept(n, keep), vision, connector,
                _prefill(m, m.model.language_model, m.lm_head, width, TEXT_TOKENS + 2 + _kept(n, keep)))
            for keep in KEEPS]
    shape = "one 448 px tile" if tiles == 1 else f"{tiles - 1} tiles and a thumbnail (an {2 * size} px square image)"
    return (f"InternVL3-8B, {tiles} tile{'s' if tiles > 1 else ''}",
            f"{n} tokens, {patches // 4} per tile pixel-shuffled from {patches} InternViT patches, {shape}; "
            "pruned after the projector, per image across its tiles; <img> / </img> kept", rows)


def internvl(tiny: bool) -> list[tuple[str, str, list[Row]]]:
    """InternVL3-8B (OpenGVLab/InternVL3-8B-hf): InternViT-300M on each 448 px tile, pixel shuffle (2 x 2 patches
    per token, 256 per tile), MLP projector, Qwen2.5-7B. One tile (an image up to 448 px), and the 2 x 2 tiles plus
    thumbnail the processor cuts an 896 px square image into."""
    return [_internvl(tiny, 1), _internvl(tiny, 5)]


ARCHS = {"llava": llava, "llava_next": llava_next, "qwen2_vl": qwen2_vl, "qwen3_vl": qwen3_vl,
         "qwen2_5_vl_video": qwen2_5_vl_video, "blip2": blip2,
         "instructblip": instructblip, "idefics": idefics, "gemma3": gemma3, "internvl": internvl}

NOTES = """\
## Where pruning saves little, and why

- **BLIP-2 / InstructBLIP, `cut='vit'`**: the language model's input does not change (it always
  receives the Q-Former's query tokens), so pruning ViT patches saves only the key/value
  projections and attention of the Q-Former's cross-attention layers. The ViT itself runs in full
  (the patches are scored on its output). The saving is a fraction of a percent of the total:
  use `cut='query'` to shorten the language model's input.
- **BLIP-2 / InstructBLIP, `cut='query'`**: saves language-model prefill only, in proportion to
  the dropped query tokens against the prompt's text tokens; vision and Q-Former run in full.
- **IDEFICS**: visprune prunes before the perceiver resampler, which always returns its 64
  latents: the gated cross-attention layers of the language model see the same 64 latents, and
  the prefill cost does not move. Only the resampler's work shrinks, which is small against the
  ViT-H tower and the 9B language model.
- **LLaVA, LLaVA-NeXT, Qwen2-VL, Gemma 3, InternVL**: pruning happens after the projector (patch merger,
  pool, pixel shuffle), so the vision tower and projector run in full and the saving is all in the
  language-model prefill, where visual tokens dominate the prompt. Qwen2-VL's own vision tower (full attention over
  2304 patches) is a large share of its total, which caps the relative saving. Gemma 3's is more:
  SigLIP at 896 px attends over 4,096 patches before pooling them into 256 tokens, 5.5 TFLOP,
  more than Gemma-3-4B's whole prefill, so pruning the pooled tokens saves at most the prefill's share.
  InternVL's InternViT-300M runs once per tile (0.72 TFLOP each), a sixth of InternVL3-8B's
  unpruned total at any tile count, so its savings follow the language model's share.
- **Qwen2.5-VL video**: a 32-frame clip at 448x448 is 4,096 merged tokens, and the vision tower
  (window attention, full attention within each temporal patch in 4 of its 32 blocks) runs on all
  16,384 patches before anything is pruned: about a quarter of the unpruned total, which caps the
  saving as for Qwen2-VL's image. The temporal stage (`temporal=`) selects after the merger too, so
  it moves the language-model share only.

Counting notes: the language model's prefill includes the LM head on the last position only (as
`generate` computes it); IDEFICS is counted with eager attention (its forward always builds a
padding mask that the SDPA mask code inspects, which meta tensors cannot do), whose matmuls torch
counts exactly as the SDPA formula does; Qwen2-VL's vision rotary positions (and Qwen2.5-VL's window
layout) are computed from the real grid and handed over on meta.
"""


def render(results: list[tuple[str, str, list[Row]]], tiny: bool) -> str:
    unit, scale = ("MFLOP", 1e6) if tiny else ("GFLOP", 1e9)
    out = ["# Counted savings of visual-token pruning", "",
           "Generated by `python scripts/savings_table.py`; do not edit by hand." if not tiny else
           "Tiny configurations (`--tiny`): a smoke test of the script, not a result.", "",
           "FLOPs of one image (or the one video clip a row names) and a prompt of "
           f"{TEXT_TOKENS} text tokens, batch 1, prefill only (decoder stack over the prompt and the LM head on its "
           "last position), counted with `visprune.measure.flops.count_flops_by_module` (`torch.utils.flop_counter`, a "
           "multiply-add is 2 FLOPs) on models built on the `meta` device at their published sizes. Pruning itself "
           "cannot run on meta tensors (it reads values), so each row runs the *stock* modules at the sizes the "
           "pruned model really gives them: the vision tower on the full image, the connector and the language "
           "model on the kept counts (the `ratio` budget's rounding; protected [CLS] and newline tokens kept on "
           "top). visprune's own scoring and selection are not counted.", ""]
    for name, what, rows in results:
        base = rows[0].total
        header = ["keep", "tokens at cut", "visual tokens into LM", f"vision {unit}", f"connector {unit}",
                  f"LM prefill {unit}", f"total {unit}", "saved"]
        cells = [[f"{r.keep:g}", r.at_cut, r.lm_visual, f"{r.vision / scale:,.1f}", f"{r.connector / scale:,.1f}",
                  f"{r.lm / scale:,.1f}", f"{r.total / scale:,.1f}", f"{1 - r.total / base:.1%}"] for r in rows]
        out += [f"## {name}", "", f"Visual tokens at the cut: {what}.", "", markdown_table(header, cells, align="---:"), ""]
    out.append(NOTES)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "savings.md"),
                    help="markdown file to write, '-' for stdout")
    ap.add_argument("--arch", action="append", choices=list(ARCHS), help="only these architectures")
    ap.add_argument("--tiny", action="store_true", help="tiny configs (smoke test)")
    args = ap.parse_args(argv)
    results = []
    for name in args.arch or list(ARCHS):
        got = ARCHS[name](args.tiny)
        results.extend(got if isinstance(got, list) else [got])
    text = render(results, args.tiny)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {os.path.normpath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
