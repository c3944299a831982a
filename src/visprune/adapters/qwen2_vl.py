"""Qwen2-VL and Qwen2.5-VL (``qwen2_vl``, ``qwen2_5_vl``): M-RoPE positions kept, no [CLS].

Modifications against the stock model (transformers 5.23 ``Qwen2VLModel`` / ``Qwen2_5_VLModel``):
the 3-D rotary positions are computed for the *full* prompt with the model's own
``get_rope_index`` and only the surviving columns are passed on as explicit ``position_ids``
(4 rows: text positions, then temporal / height / width), so every kept token keeps the position
it had in the unpruned prompt and the generated tokens continue from the same maximum position.
Passing the shortened prompt with ``image_grid_thw`` would fail on shapes; dropping the grid would
silently fall back to 1-D positions.

Videos (``pixel_values_videos`` / ``video_grid_thw``) are pruned like images, within each video: a
video is one visprune entry with its own budget over all its frames' tokens (the simplest correct
unit: the model scatters a video's features as one run of ``<|video_pad|>`` placeholders, frame by
frame). The model's own ``get_video_features`` runs once with the same capture; the tower attends
within each temporal patch (two frames, ``cu_seqlens``), so a video token's saliency is the
attention it receives from the patches of its own frame pair. Entries are all images, then all
videos (``Encoded.modalities``), and each kind's keep mask follows that kind's placeholders, since
the model scatters image and video features separately. Kept video tokens keep their 3-D (t, h, w)
positions: ``get_rope_index`` runs on the full prompt with ``video_grid_thw`` (and Qwen2.5-VL's
``second_per_grid_ts``). Each entry's token grid ``(t, h, w)`` after the merger (``Encoded.thw``: one
temporal group per frame pair, tokens in ``(t, h, w)`` row-major order, as ``pooler_output`` holds them)
feeds the temporal stage (``PruneConfig.temporal``).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from ..measure import clock
from ..measure.savings import META, Counts, Section, after_connector, build, flops_by_module, meta, prefill
from .. import ops
from ..batching import RowPlan
from ..errors import UsageError
from ..scoring.context import IMAGE_KEY, KEYS, PATCH_HIDDEN, SALIENCY
from ..callscope import original, overriding, this_thread
from .base import Adapter, Encoded, hidden_index_to_layer, pixel_key
from .boxes import View
from .qwen_inputs import QWEN2_VISION, qwen_tiny


class _QwenCapture:
    """Records what the scoring block's attention saw: its input, segment bounds and rotary terms."""

    def __init__(self, block: nn.Module):
        self.block = block
        self.values: dict[str, Any] = {}

    @contextmanager
    def active(self):
        def hook(_module, args, kwargs):
            self.values["hidden"] = args[0] if args else kwargs["hidden_states"]
            self.values["cu_seqlens"] = kwargs["cu_seqlens"]
            self.values["rotary"] = kwargs["position_embeddings"]

        handle = self.block.attn.register_forward_pre_hook(this_thread(hook), with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()

    def qk(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary-embedded queries and keys, ``[P, H, hd]`` each, exactly as the block computes them."""
        from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

        attn = self.block.attn
        hidden = self.values["hidden"]
        q, k, _ = attn.qkv(hidden).reshape(hidden.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = self.values["rotary"]
        return apply_rotary_pos_emb_vision(q, k, cos, sin)


class Qwen2VLAdapter(Adapter):
    """Qwen2-VL: features come from ``model.model.get_image_features`` (after the 2x2 patch merger).

    Saliency without a [CLS] token: the mean attention each patch *receives* from all patches of
    its image at the scoring block (default: the last block that attends over the whole image),
    heads averaged, then averaged over the 2x2 patches merged into one token. A token that every
    query looks at is what a [CLS] query would look at too; this is the usual proxy for towers
    without [CLS] (SigLIP in LLaVA-OneVision gets the same definition), so ``cls`` and ``atp``
    work here. The CLIP ``text`` scorer does not (Qwen's tower shares no space with a CLIP text
    tower): use ``lmtext``, which ATP uses when there is no CLIP text encoder (``text_encoder=None``, or
    ``"auto"`` on a folder that ships no ``clip/``).
    """

    model_types = ("qwen2_vl",)
    multi_axis_positions = True
    image_input_keys = ("pixel_values", "image_grid_thw")
    video_input_keys = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
    position_modes = ("original",)  # M-RoPE positions of the kept tokens are always kept (extra_inputs)
    unsupported = {
        PATCH_HIDDEN: "the CLIP 'text' scorer needs a CLIP vision tower; Qwen's tower shares no space with a CLIP "
        "text tower: use scorer='lmtext' (ATP uses it without a CLIP text encoder: text_encoder=None)"
    }

    def has_images(self, kwargs: dict) -> bool:
        return any(kwargs.get(k) is not None and kwargs[k].numel() > 0 for k in ("pixel_values", "pixel_values_videos"))

    def visual_tokens(self, model: nn.Module) -> dict[str, int]:
        return {"image": self.image_token_id(model), "video": int(model.config.video_token_id)}

    def check_inputs(self, model: nn.Module, kwargs: dict) -> None:
        """Videos as the processor builds them: ``video_grid_thw`` rows ``(t, h, w)`` with ``t >= 1``
        temporal patches of ``temporal_patch_size`` frames each and ``h``, ``w`` multiples of the merge
        size, and ``t * h * w`` rows of ``pixel_values_videos`` per video, each ``temporal_patch_size`` frames wide."""
        pixels, grid = kwargs.get("pixel_values_videos"), kwargs.get("video_grid_thw")
        if pixels is None:
            return
        vis = model.model.visual
        merge, frames = vis.spatial_merge_size, int(getattr(vis.config, "temporal_patch_size", 2))
        width = int(vis.config.in_channels) * frames * int(vis.config.patch_size) ** 2
        hint = ("build videos with the model's processor (each video's frame count padded to a multiple of "
                f"temporal_patch_size={frames}, one video_grid_thw row per video)")
        if grid is None or grid.dim() != 2 or grid.shape[1] != 3:
            raise UsageError(f"pixel_values_videos needs video_grid_thw, one (t, h, w) row per video; {hint}")
        rows = grid.tolist()
        for i, (t, h, w) in enumerate(rows):
            if t < 1 or h < 1 or w < 1 or h % merge or w % merge:
                raise UsageError(f"video {i} has grid (t, h, w) = ({t}, {h}, {w}): t must be at least 1 and h, w "
                                 f"positive multiples of the merge size {merge}; {hint}")
        total = sum(t * h * w for t, h, w in rows)
        if pixels.dim() != 2 or pixels.shape[0] != total or pixels.shape[1] != width:
            raise UsageError(f"pixel_values_videos is {tuple(pixels.shape)} but video_grid_thw gives {total} patches "
                             f"of {width} values ({frames} frames x {vis.config.in_channels} channels x "
                             f"{vis.config.patch_size}^2 pixels); {hint}")

    def check(self, model: nn.Module) -> None:
        base = getattr(model, "model", None)
        if base is None or not hasattr(base, "visual") or not hasattr(base, "get_rope_index"):
            raise TypeError(f"{type(model).__name__} lacks model.visual / model.get_rope_index")

    def _full_attention_blocks(self, tower: nn.Module) -> list[int]:
        return list(range(len(tower.blocks)))

    def picture_views(self, model: nn.Module, processor: Any, picture: Any, config: Any = None) -> tuple[list[View], int]:
        """The processor resizes the whole picture (``smart_resize``: each side to a multiple of the patch
        size times the merge size, aspect nearly kept) and the merger's tokens tile it: one
        ``h/2 x w/2`` grid of ``image_grid_thw``."""
        _, h, w = (int(x) for x in processor.image_processor(images=[picture], return_tensors="pt")["image_grid_thw"][0])
        merge = model.model.visual.spatial_merge_size
        rows, cols = h // merge, w // merge
        return [View(rows, cols, (0.0, 0.0, 1.0, 1.0), 0)], rows * cols

    def vision_depth(self, model: nn.Module) -> int:
        return len(model.model.visual.blocks)

    @contextmanager
    def _recording_window(self, tower: nn.Module):
        """Yields a getter of the window order the tower used (Qwen2-VL keeps patches in order: none)."""
        yield lambda grid: None

    def _scoring_block(self, tower: nn.Module, config: Any) -> int:
        if config.layer is not None:
            return hidden_index_to_layer(config.layer, len(tower.blocks))
        return self._full_attention_blocks(tower)[-1]

    def encode(self, model: nn.Module, image_inputs: dict, needs: frozenset[str], config: Any) -> Encoded:
        """Images, then videos: each kind through the model's own feature code, once, with the capture."""
        parts = []
        if image_inputs.get("pixel_values") is not None:
            parts.append(("image", self._encode_kind(
                model, model.model.get_image_features, image_inputs["pixel_values"], image_inputs["image_grid_thw"],
                needs, config)))
        if image_inputs.get("pixel_values_videos") is not None:
            parts.append(("video", self._encode_kind(
                model, model.model.get_video_features, image_inputs["pixel_values_videos"],
                image_inputs["video_grid_thw"], needs, config)))
        if len(parts) == 1 and parts[0][0] == "image":
            return parts[0][1]
        return _joined(parts)

    def _encode_kind(self, model: nn.Module, features_of, pixels: torch.Tensor, grid: torch.Tensor,
                     needs: frozenset[str], config: Any) -> Encoded:
        tower = model.model.visual
        block = tower.blocks[self._scoring_block(tower, config)]
        capture = _QwenCapture(block)
        want_attention = SALIENCY in needs or KEYS in needs
        t0 = clock.now()
        with capture.active() if want_attention else nullcontext(), self._recording_window(tower) as window_of:
            out = features_of(pixels, grid, return_dict=True)
        model_seconds = clock.now() - t0
        features = list(out.pooler_output)
        unit = tower.spatial_merge_size**2
        lengths = [f.shape[0] for f in features]
        enc = Encoded(features=features, protected=[torch.zeros(n, dtype=torch.bool, device=f.device)
                                                   for n, f in zip(lengths, features)], extras=self.other_outputs(out))
        grid_host = grid.tolist()  # one read for both uses
        merged_grid = [(int(h) // tower.spatial_merge_size, int(w) // tower.spatial_merge_size) for _, h, w in grid_host]
        enc.model_seconds = model_seconds
        enc.grids = [g if int(t) == 1 else None for g, (t, _, _) in zip(merged_grid, grid_host)]
        enc.thw = [(int(t), h, w) for (h, w), (t, _, _) in zip(merged_grid, grid_host)]
        if IMAGE_KEY in needs:
            enc.image_keys = [pixel_key(c) for c in torch.split(pixels, [n * unit for n in lengths])]
        if not want_attention:
            return enc
        q, k = capture.qk()  # [P, H, hd], block order
        window = window_of(grid)
        if SALIENCY in needs:
            bounds = capture.values["cu_seqlens"].tolist()
            received = torch.cat([
                ops.received_attention(
                    q[a:b].reshape(1, b - a, -1), k[a:b].reshape(1, b - a, -1), q.shape[1], block.attn.scaling
                )[0]
                for a, b in zip(bounds[:-1], bounds[1:])
            ])
            enc.saliency = list(torch.split(self._to_tokens(received[:, None], unit, window)[:, 0], lengths))
        if KEYS in needs:
            keys = k.reshape(k.shape[0], -1).float()
            enc.keys = list(torch.split(self._to_tokens(keys, unit, window), lengths))
        return enc

    def other_outputs(self, out: Any) -> dict:
        """What else the tower returned per token that the language model needs, for ``Encoded.extras``
        (Qwen3-VL's DeepStack features); Qwen2-VL returns nothing else."""
        return {}

    @staticmethod
    def _to_tokens(per_patch: torch.Tensor, unit: int, window: torch.Tensor | None) -> torch.Tensor:
        """Block-order patch values -> merged-token values in the model's output order."""
        tokens = per_patch.reshape(-1, unit, per_patch.shape[-1]).float().mean(1)
        if window is not None:
            tokens = tokens[torch.argsort(window.to(tokens.device))]
        return tokens

    def extra_inputs(self, model, image_inputs, kwargs, input_ids, attention_mask, keep, new_attention_mask, side):
        mm_types = kwargs.get("mm_token_type_ids")
        if mm_types is None:
            mm_types = (input_ids == model.config.image_token_id).int()
            video_id = getattr(model.config, "video_token_id", None)
            if video_id is not None:
                mm_types = mm_types + 2 * (input_ids == video_id).int()
        full, _ = model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_types,
            image_grid_thw=image_inputs.get("image_grid_thw"),
            video_grid_thw=image_inputs.get("video_grid_thw"),
            attention_mask=attention_mask,
            **({"second_per_grid_ts": image_inputs["second_per_grid_ts"]}
               if image_inputs.get("second_per_grid_ts") is not None else {}),
        )
        plan = RowPlan(keep, side, new_attention_mask.shape[1])  # the width is known: nothing read back
        rope = plan.gather(full.permute(1, 2, 0), 0).permute(2, 0, 1)  # [3, B, L']
        text = (new_attention_mask.long().cumsum(-1) - 1).masked_fill(new_attention_mask == 0, 0)
        # Decoding continues from each row's largest kept position, as it would unpruned.
        model.model.rope_deltas = (rope.amax(dim=(0, 2)) + 1 - new_attention_mask.sum(-1)).unsqueeze(1)
        extra = {"position_ids": torch.cat([text[None], rope], dim=0)}
        if "mm_token_type_ids" not in kwargs:
            extra["mm_token_type_ids"] = plan.gather(mm_types, 0)
        return extra


def _joined(parts: list[tuple[str, Encoded]]) -> Encoded:
    """Per-kind encodings as one: entries of the first kind, then the next (``Encoded.modalities``)."""
    encs = [e for _, e in parts]

    def cat(name):
        values = [getattr(e, name) for e in encs]
        return None if any(v is None for v in values) else [x for v in values for x in v]

    extras = {}
    for key in encs[0].extras:  # [layer][entry] lists (Qwen3-VL's DeepStack): entries joined per layer
        extras[key] = [[x for e in encs for x in e.extras[key][layer]] for layer in range(len(encs[0].extras[key]))]
    return Encoded(
        features=cat("features"), protected=cat("protected"), saliency=cat("saliency"), keys=cat("keys"),
        image_keys=cat("image_keys"), grids=cat("grids"), thw=cat("thw"), extras=extras,
        model_seconds=sum(e.model_seconds for e in encs),
        modalities=[kind for kind, e in parts for _ in e.features],
    )


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: as Qwen2-VL, plus windowed attention inside the tower.

    Most blocks attend within windows over patches reordered by ``window_index``; the scoring
    block defaults to the last *full-attention* block (``fullatt_block_indexes``), and the
    captured values are put back into the model's output order with the inverse permutation,
    exactly as the tower does for its merged output.
    """

    model_types = ("qwen2_5_vl",)

    def _full_attention_blocks(self, tower: nn.Module) -> list[int]:
        return list(tower.fullatt_block_indexes) or super()._full_attention_blocks(tower)

    @contextmanager
    def _recording_window(self, tower: nn.Module):
        """Yields a getter of the window order the tower itself computed during the call.

        The tower permutes its patches with it (``permute_input_for_window_attn``); recording that
        call's argument, through an instance attribute removed afterwards, spares recomputing the
        order, which reads the grid back image by image. Without the method (another transformers
        version) the order is recomputed from the grid.
        """
        seen: list[torch.Tensor] = []
        method = original(tower, "permute_input_for_window_attn")  # not another thread's recording
        getter = lambda grid: seen[0] if seen else self._window_index(tower, grid)  # noqa: E731
        if method is None:
            yield getter
            return

        def recording(input_tensor, window_index, seq_len):
            if not seen:
                seen.append(window_index)
            return method(input_tensor, window_index, seq_len=seq_len)

        with overriding(tower, "permute_input_for_window_attn", recording):
            yield getter

    @staticmethod
    def _window_index(tower: nn.Module, grid_thw: torch.Tensor) -> torch.Tensor:
        from transformers.vision_utils import get_vision_window_index

        window, _ = get_vision_window_index(
            grid_thw, spatial_merge_size=tower.spatial_merge_size, window_size=tower.window_size,
            patch_size=tower.patch_size,
        )
        return window


# --- savings at published size (docs/savings.md, visprune.measure.savings) ---


def savings(tiny: bool) -> list[Section]:
    """Qwen2-VL-7B on an image and Qwen2.5-VL-7B on a video clip, each pruned after its patch merger."""
    return [_qwen2_vl_image(tiny), _qwen2_5_vl_video(tiny)]


def _qwen2_vl_image(tiny: bool) -> Section:
    """Qwen2-VL-7B-Instruct on a 672x672 image: 48x48 patches -> 24x24 = 576 merged tokens."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.vision_utils import get_vision_position_ids

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
    m = build(Qwen2VLForConditionalGeneration, cfg)
    g = image // 14
    patches = g * g
    n = patches // 4
    grid = torch.tensor([[1, g, g]])
    # Rotary positions come from the (real) grid; handed over on meta, as the tower's own helper allows.
    positions = get_vision_position_ids(grid, cfg.vision_config.spatial_merge_size).to(META)
    by_module = flops_by_module(m.model.visual, meta(patches, 3 * 2 * 14 * 14), grid_thw=grid, position_ids=positions)
    connector = by_module.get("merger", 0)
    width = cfg.text_config.hidden_size
    rows = after_connector(n, by_module["total"] - connector, connector,
                           lambda length: prefill(m.model.language_model, m.lm_head, width, length))
    return Section("Qwen2-VL-7B", f"{n} merged tokens (672x672 image), pruned after the patch merger", rows,
                   source="Qwen/Qwen2-VL-7B-Instruct's config.json")


def _qwen2_5_vl_video(tiny: bool) -> Section:
    """Qwen2.5-VL-7B-Instruct on a 32-frame clip at 448x448 per frame: 2 frames per temporal patch, 32x32
    patches per frame -> 16 temporal groups x 16x16 = 4,096 merged tokens, pruned within the video."""
    c = qwen2_5_vl_7b_video_counts(tiny)
    frames, image = video_clip(tiny)
    g, t = image // 14, frames // 2
    return Section(f"Qwen2.5-VL-7B, {frames}-frame video", f"{c.n} merged tokens ({frames} frames of {image}x{image}: {t} "
                   f"temporal patches of {g // 2}x{g // 2}), pruned after the patch merger within the video; the vision "
                   "tower runs on the whole clip", after_connector(c.n, c.vision, c.connector, c.lm),
                   source="Qwen/Qwen2.5-VL-7B-Instruct's config.json")


def video_clip(tiny: bool = False) -> tuple[int, int]:
    """(frames, side in px) of the Qwen2.5-VL-7B video row's clip (and of ``visprune bench --geometry
    qwen2.5-vl-7b-video``)."""
    return (4, 112) if tiny else (32, 448)


def qwen2_5_vl_7b_config(tiny: bool = False, layers: tuple[int, int] | None = None):
    """Qwen/Qwen2.5-VL-7B-Instruct's published shapes (its config.json); ``tiny``: every width and depth
    shrunk. ``layers``: a (vision, text) depth override at full width (the full-attention blocks
    that fall inside the shorter tower, else its last), for quick checks of the real-size code path."""
    from transformers import Qwen2_5_VLConfig

    if tiny:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=1000,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=56,
                      fullatt_block_indexes=[1])
    else:
        text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                    num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
        vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=112,
                      fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
    if layers is not None:
        depth, text["num_hidden_layers"] = layers
        vision["depth"] = depth
        vision["fullatt_block_indexes"] = [i for i in vision["fullatt_block_indexes"] if i < depth] or [depth - 1]
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
                            vision_start_token_id=151652, vision_end_token_id=151653)


def qwen2_5_vl_7b_video_counts(tiny: bool = False) -> Counts:
    """Qwen2.5-VL-7B's counted prefill on the clip of :func:`video_clip`, on the ``meta`` device: the
    savings row above and ``visprune bench --geometry qwen2.5-vl-7b-video`` without a GPU."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

    cfg = qwen2_5_vl_7b_config(tiny)
    frames, image = video_clip(tiny)
    m = build(Qwen2_5_VLForConditionalGeneration, cfg)
    g = image // 14
    t = frames // 2
    n = t * g * g // 4
    grid = torch.tensor([[t, g, g]])
    # rotary positions and the window layout come from the (real) grid; handed over on meta
    positions = get_vision_position_ids(grid, 2).to(META)
    window, cu_window = get_vision_window_index(grid, spatial_merge_size=2, window_size=cfg.vision_config.window_size,
                                                patch_size=14)
    by_module = flops_by_module(m.model.visual, meta(t * g * g, 3 * 2 * 14 * 14), grid_thw=grid, position_ids=positions,
                                window_index=window.to(META), cu_window_seqlens=cu_window)
    connector = by_module.get("merger", 0)
    width = cfg.text_config.hidden_size
    return Counts(n, by_module["total"] - connector, connector,
                  lambda length: prefill(m.model.language_model, m.lm_head, width, length))


TINY = {
    "qwen2_vl": qwen_tiny("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", dict(QWEN2_VISION, hidden_size=32, mlp_ratio=2),
                          timestamps=False, doc="Qwen2-VL layout: ViT without [CLS], 2x2 merger, M-RoPE, Qwen2 LM."),
    "qwen2_5_vl": qwen_tiny("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", timestamps=False,
                            vision=dict(QWEN2_VISION, hidden_size=32, intermediate_size=64, out_hidden_size=32,
                                        window_size=56, fullatt_block_indexes=[1]),
                            doc="Qwen2.5-VL layout: Qwen2-VL's with window attention (full in block 1)."),
}
