"""Shared logic of the LLaVA family: LLaVA, LLaVA-NeXT, LLaVA-OneVision (transformers 5.x)."""

from __future__ import annotations

import math
import sys
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from ..callscope import original, overriding
from ..errors import UsageError
from ..measure import clock
from ..scoring.context import LAST_QK, TOWER, CropStates, TowerStates
from .boxes import View, fit_and_pad, in_picture, resize_crop_box
from .base import Adapter, Capture, Encoded, encoder_layers, hidden_index_to_layer, tower_has_cls, assign_signals


class LlavaFamilyAdapter(Adapter):
    """Runs ``model.model.get_image_features`` (the model's own code) with capture hooks.

    Scoring signals are captured per crop as ``[crops, T, C]`` and put through the *same*
    selection (dropping [CLS] under the ``default`` strategy) and, for the any-resolution models,
    the model's own ``pack_image_features`` (unpadding, interpolation, row-end newline tokens), so
    signal ``j`` of an image describes exactly feature ``j``. Newline tokens come out as NaN
    signals and are marked protected: they are structure, not content, and always kept.
    """

    image_input_keys = (
        "pixel_values",
        "image_sizes",
        "vision_feature_layer",
        "vision_feature_select_strategy",
        "vision_aspect_ratio",
        "batch_num_images",
    )
    packs = False
    #: ``Encoded.crops`` is filled: each packed token's crop, read through ``pack_image_features``
    #: itself (an extra signal channel holding the crop's number); only where packing keeps every
    #: token inside one crop (LLaVA-NeXT's unpadding; not LLaVA-OneVision's interpolation, which
    #: blends neighbouring crops)
    tells_crops = False
    position_modes = ("compact", "original")

    def picture_views(self, model: nn.Module, processor: Any, picture: Any, config: Any = None) -> tuple[list[View], int] | None:
        """One crop (LLaVA-1.5): the tower's patch grid over the part of the picture the processor keeps
        (shortest side resized, centre crop), after a [CLS] under the "full" strategy. Several crops
        (:attr:`packs`): two panels, the base image (the whole picture squashed to the tower's square)
        and the crops' grid after the model's own ``pack_image_features``: unpadded to the picture's
        aspect, OneVision's interpolated down to its token cap, a newline ending each row."""
        cfg = model.config
        side = cfg.vision_config.image_size // cfg.vision_config.patch_size
        strategy = getattr(cfg, "vision_feature_select_strategy", "default")
        n_cls = int(strategy != "default" and tower_has_cls(model.model.vision_tower))
        if not self.packs:
            box = resize_crop_box(processor.image_processor, picture.size)
            return [View(side, side, box, n_cls)], n_cls + side * side
        if n_cls:  # a [CLS] per crop: the model itself cannot pack that
            return None
        inputs = processor.image_processor(images=[picture], return_tensors="pt")
        crops, sizes = inputs["pixel_values"].shape[1], inputs["image_sizes"]
        packed = self.pack(model, [torch.zeros(crops, side * side, 1)], sizes, torch.full((1,), math.nan))[0][0]
        base = View(side, side, (0.0, 0.0, 1.0, 1.0), 0)
        if crops == 1:  # the base image alone (then a newline)
            return [base], packed.shape[0]
        lines = int(torch.isnan(packed[side * side:, 0]).sum())
        cols = (packed.shape[0] - side * side) // lines - 1
        # the crops' canvas, in tokens (one per patch_size pixels), and the part unpadding keeps, read
        # off the model's own unpad_image applied to the token coordinates
        code = sys.modules[type(model.model).__module__]
        tall, wide = code.get_anyres_image_grid_shape(sizes[0], cfg.image_grid_pinpoints, cfg.vision_config.image_size)
        rows_at = torch.arange(tall * side, dtype=torch.float64)[:, None].expand(-1, wide * side)
        cols_at = torch.arange(wide * side, dtype=torch.float64)[None].expand(tall * side, -1)
        kept = code.unpad_image(torch.stack([rows_at, cols_at]), sizes[0])
        patch = cfg.vision_config.patch_size
        region = (float(kept[1].min()) * patch, float(kept[0].min()) * patch,
                  (float(kept[1].max()) + 1) * patch, (float(kept[0].max()) + 1) * patch)
        h, w = (int(x) for x in sizes[0])
        placed = fit_and_pad((w, h), (wide * side * patch, tall * side * patch))
        grid = View(lines, cols, in_picture(region, placed), side * side, panel=1, stride=cols + 1)
        return [base, grid], packed.shape[0]

    def pack(self, model: nn.Module, features: list, sizes: torch.Tensor, newline: torch.Tensor):
        """The model's own ``pack_image_features`` (LLaVA-NeXT's arguments): per image ``[tokens, C]``, lengths."""
        strategy = model.config.vision_feature_select_strategy
        return model.model.pack_image_features(features, sizes, vision_feature_select_strategy=strategy,
                                               image_newline=newline)

    def check(self, model: nn.Module) -> None:
        base = getattr(model, "model", None)
        if base is None or not hasattr(base, "get_image_features") or not hasattr(base, "vision_tower"):
            raise TypeError(f"{type(model).__name__} lacks model.get_image_features / model.vision_tower")
        encoder_layers(base.vision_tower)

    def check_tower(self, model: nn.Module, config: Any, scorer: Any) -> None:
        """The tower-space path runs on one feature layer, [CLS] dropped (LLaVA-1.5's ``default``
        strategy, what VisionZip's and PruMerge's official code assume), one crop per image or, for
        scorers that run crop by crop (VisionZip), LLaVA-NeXT's crops."""
        super().check_tower(model, config, scorer)
        if not scorer.needs & {TOWER, LAST_QK}:
            return
        cfg = model.config
        why = None
        if not isinstance(cfg.vision_feature_layer, int):
            why = f"vision_feature_layer={cfg.vision_feature_layer!r} (several layers); it needs one layer"
        elif cfg.vision_feature_select_strategy != "default":
            why = f"vision_feature_select_strategy={cfg.vision_feature_select_strategy!r}; it needs 'default'"
        elif not tower_has_cls(model.model.vision_tower):
            why = "a vision tower without [CLS]; it reads the [CLS] attention"
        if why:
            variant = getattr(scorer, "projected_variant", None)
            raise TypeError(f"scorer {config.scorer_name!r} (tower-space merging) cannot run on this model: {why}"
                            + (f"; its post-projector variant {variant} can" if variant else ""))

    def vision_depth(self, model: nn.Module) -> int:
        return len(encoder_layers(model.model.vision_tower))

    def _layers(self, model: nn.Module, image_inputs: dict, config: Any) -> tuple[int, int]:
        n = len(encoder_layers(model.model.vision_tower))
        feat = image_inputs.get("vision_feature_layer", model.config.vision_feature_layer)
        if config.layer is not None:
            sal = hidden_index_to_layer(config.layer, n)
        elif isinstance(feat, int):
            sal = hidden_index_to_layer(feat, n) if feat != 0 else 0
        else:  # several feature layers: the deepest of them
            sal = max(hidden_index_to_layer(f, n) for f in feat)
        return sal, hidden_index_to_layer(config.text_layer, n)

    def encode(self, model: nn.Module, image_inputs: dict, needs: frozenset[str], config: Any) -> Encoded:
        base = model.model
        tower = base.vision_tower
        sal_layer, text_layer = self._layers(model, image_inputs, config)
        feat_layer = None
        if TOWER in needs:  # one int layer: check_tower made sure
            feat = image_inputs.get("vision_feature_layer", model.config.vision_feature_layer)
            feat_layer = hidden_index_to_layer(feat, len(encoder_layers(tower)))
        capture = Capture(tower, needs, sal_layer, text_layer, feat_layer)
        packed_calls: list[dict] = []
        if self.packs:
            original_pack = base.pack_image_features

            def recording_pack(image_features, *args, **kwargs):
                packed_calls.append({"sizes": [f.shape[0] for f in image_features], "args": args, "kwargs": kwargs})
                return original_pack(image_features, *args, **kwargs)

            base.pack_image_features = recording_pack  # instance attribute, removed below
        try:
            with capture.active():
                t0 = clock.now()
                out = base.get_image_features(**image_inputs, return_dict=True)
                model_seconds = clock.now() - t0
        finally:
            if self.packs:
                del base.pack_image_features
        features = list(out.pooler_output)
        signals = capture.per_crop_signals(tower_has_cls(tower))
        strategy = image_inputs.get("vision_feature_select_strategy", model.config.vision_feature_select_strategy)
        if strategy == "default":
            signals = signals[:, 1:]
        crop_of = patch_of = None
        per_crop = signals  # [crops, P, C], every patch: the crop-by-crop tower-space path reads these
        if self.packs:
            call = packed_calls[-1]
            crops = call["sizes"]
            marks = []  # extra channels, read back after packing
            if self.tells_crops:  # the crop's number within its image
                marks.append(torch.cat([torch.arange(n, device=signals.device) for n in crops])[:, None]
                             .expand(-1, signals.shape[1]))
            if TOWER in needs:  # each patch's index within its crop (CropStates.packed)
                marks.append(torch.arange(signals.shape[1], device=signals.device).expand(signals.shape[0], -1))
            if marks:
                signals = torch.cat([signals, torch.stack(marks, -1).to(signals.dtype)], dim=-1)
            nan_line = torch.full((signals.shape[-1],), math.nan, device=signals.device)
            kwargs = dict(call["kwargs"], image_newline=nan_line)
            per_image, _ = original_pack(list(torch.split(signals, crops)), *call["args"], **kwargs)
            if marks:
                read = [torch.nan_to_num(s[:, -len(marks):], nan=-1.0).round().long() for s in per_image]
                per_image = [s[:, : -len(marks)] for s in per_image]
                crop_of = [r[:, 0] for r in read] if self.tells_crops else None
                patch_of = [r[:, -1] for r in read] if TOWER in needs else None
        else:
            crops = [1] * signals.shape[0]
            per_image = list(signals)
        for f, s in zip(features, per_image):
            if f.shape[0] != s.shape[0]:
                raise RuntimeError(f"internal: {s.shape[0]} signals for {f.shape[0]} features; please report")
        protected = [torch.isnan(s[:, 0]) | (s[:, 0] > 0.5) for s in per_image]
        enc = Encoded(features=features, protected=protected, image_keys=capture.image_keys(crops), crops=crop_of)
        enc.model_seconds = model_seconds
        assign_signals(enc, per_image, needs, model.model.vision_tower.config.hidden_size)
        if TOWER in needs:
            enc.tower = self._tower_states(model, capture, sal_layer, strategy)
            if self.packs:
                enc.tower.hidden = list(torch.split(capture.values["tower"], crops))
                sizes = call["kwargs"].get("image_sizes", call["args"][0] if call["args"] else None)
                enc.tower.crops = self._crop_states(model, per_crop, crops, crop_of, patch_of, sizes, needs)
        if not self.packs:  # one crop per image: only a kept [CLS] ("full" strategy) is protected
            n_cls = int(strategy != "default" and tower_has_cls(tower))
            enc.grids = [_square(f.shape[0] - n_cls) for f in features]
        return enc

    def _tower_states(self, model: nn.Module, capture: Capture, sal_layer: int, strategy: str) -> TowerStates:
        """The feature layer's hidden states with [CLS] (row 0; candidate ``j`` is row ``j + 1``) and
        the model's ``multi_modal_projector``, which ``get_image_features`` applies after selecting them."""
        if strategy != "default":  # a per-call strategy that prune_ could not check
            raise TypeError("tower-space merging needs vision_feature_select_strategy='default'")
        proj = model.model.multi_modal_projector
        v = capture.values
        return TowerStates(
            hidden=list(v["tower"]),
            first=1,
            has_cls=True,
            heads=int(capture.layers[sal_layer].self_attn.num_heads),
            project=proj,
            last_q=list(v["last_q"]) if LAST_QK in capture.needs else None,
            last_k=list(v["last_k"]) if LAST_QK in capture.needs else None,
        )

    def _crop_states(self, model: nn.Module, per_crop: torch.Tensor, crops: list[int], crop_of, patch_of,
                     image_sizes, needs: frozenset[str]) -> list[CropStates]:
        """Each image's crops whole, for the crop-by-crop tower-space path (VisionZip's official
        any-resolution code selects among every patch of a crop, before any unpadding): the signals per
        crop, the crops' grid (the model's own ``get_anyres_image_grid_shape``, as ``pack_image_features``
        calls it) and where each patch landed in the packed sequence."""
        if crop_of is None or patch_of is None:
            raise RuntimeError("internal: the crop-by-crop tower path needs each packed token's crop and patch")
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

        cfg = model.config
        signals = Encoded(features=[], protected=[])
        assign_signals(signals, list(per_crop), needs, model.model.vision_tower.config.hidden_size)
        saliency, keys = torch.stack(signals.saliency), torch.stack(signals.keys)
        out, first = [], 0
        for i, n in enumerate(crops):
            packed = torch.full((n, per_crop.shape[1]), -1, dtype=torch.long, device=per_crop.device)
            where = crop_of[i] >= 0  # not a newline
            packed[crop_of[i][where], patch_of[i][where]] = where.nonzero().flatten()
            grid = (tuple(get_anyres_image_grid_shape(image_sizes[i], cfg.image_grid_pinpoints,
                                                      cfg.vision_config.image_size)) if n > 1 else (0, 0))
            out.append(CropStates(saliency=saliency[first : first + n], keys=keys[first : first + n],
                                  grid=grid, packed=packed, newline=model.model.image_newline))
            first += n
        return out


def _square(n: int) -> tuple[int, int] | None:
    side = math.isqrt(n)
    return (side, side) if side * side == n else None


class FrameVideos:
    """Videos of frames the tower encodes one by one, pooled per frame (LLaVA-OneVision, LLaVA-NeXT-Video).

    ``get_video_features`` (the model's own) runs once with the image :class:`Capture` (every frame a
    crop); each video is one entry with its own budget over all its frames' tokens. The per-patch signals
    go through :meth:`pool_frames`, the model's own per-frame pooling, so signal ``j`` describes feature
    ``j``; a newline the model appends per video (``video_newline``) gets NaN signals and is protected,
    outside ``Encoded.thw``'s ``(frames, s, s)`` grid.
    """

    video_newline = False
    video_as_one_run = False
    video_input_keys = ("pixel_values_videos",)

    def has_images(self, kwargs: dict) -> bool:
        return any(kwargs.get(k) is not None and kwargs[k].numel() > 0 for k in ("pixel_values", "pixel_values_videos"))

    def visual_tokens(self, model: nn.Module) -> dict[str, int]:
        return {"image": self.image_token_id(model), "video": int(model.config.video_token_id)}

    def check_inputs(self, model: nn.Module, kwargs: dict) -> None:
        """Videos as the video processor builds them: ``[videos, frames, 3, H, W]`` at the tower's size."""
        pixels = kwargs.get("pixel_values_videos")
        if pixels is None:
            return
        size = model.config.vision_config.image_size
        if pixels.dim() != 5 or pixels.shape[1] < 1 or tuple(pixels.shape[-2:]) != (size, size):
            raise UsageError(f"pixel_values_videos is {tuple(pixels.shape)}; LLaVA-OneVision takes [videos, frames, "
                             f"channels, {size}, {size}] (build videos with the model's processor)")

    def encode(self, model: nn.Module, image_inputs: dict, needs: frozenset[str], config: Any) -> Encoded:
        """Images, then videos: each kind through the model's own feature code, once, with the capture."""
        videos = image_inputs.get("pixel_values_videos")
        rest = {k: v for k, v in image_inputs.items() if k != "pixel_values_videos"}
        if videos is None:
            return super().encode(model, rest, needs, config)
        if needs & {TOWER, LAST_QK}:
            raise UsageError("tower-space scorers do not run on videos; choose a post-projector scorer")
        parts = []
        if rest.get("pixel_values") is not None:
            parts.append(("image", super().encode(model, rest, needs, config)))
        parts.append(("video", self._encode_videos(model, videos, rest, needs, config)))
        return _joined(parts)

    def pool_frames(self, model: nn.Module, signals: torch.Tensor) -> torch.Tensor:
        """``[frames, P*P, C]`` per-patch signals pooled as the model pools each frame's features."""
        raise NotImplementedError

    def _encode_videos(self, model: nn.Module, pixels: torch.Tensor, rest: dict, needs: frozenset[str],
                       config: Any) -> Encoded:
        base = model.model
        tower = base.vision_tower
        sal_layer, text_layer = self._layers(model, rest, config)
        capture = Capture(tower, needs, sal_layer, text_layer)
        layer = rest.get("vision_feature_layer", model.config.vision_feature_layer)
        strategy = rest.get("vision_feature_select_strategy", model.config.vision_feature_select_strategy)
        with capture.active():
            t0 = clock.now()
            out = base.get_video_features(pixels, vision_feature_layer=layer,
                                          vision_feature_select_strategy=strategy, return_dict=True)
            model_seconds = clock.now() - t0
        features = list(out.pooler_output)  # one [frames * s * s + 1, D] per video
        videos, frames = pixels.shape[:2]
        signals = capture.per_crop_signals(tower_has_cls(tower))  # [videos * frames, T, C]
        if strategy == "default":
            signals = signals[:, 1:]
        pooled = self.pool_frames(model, signals)  # [videos * frames, s * s, C], as the model pools features
        per_frame = pooled.shape[1]
        per_video = pooled.reshape(videos, frames * per_frame, -1)
        if self.video_newline:
            nan_line = torch.full((videos, 1, pooled.shape[-1]), math.nan, device=pooled.device, dtype=pooled.dtype)
            per_video = torch.cat([per_video, nan_line], dim=1)
        for f, s in zip(features, per_video):
            if f.shape[0] != s.shape[0]:
                raise RuntimeError(f"internal: {s.shape[0]} signals for {f.shape[0]} video features; please report")
        protected = [torch.isnan(s[:, 0]) | (s[:, 0] > 0.5) for s in per_video]
        side = math.isqrt(per_frame)
        enc = Encoded(features=features, protected=protected, image_keys=capture.image_keys([frames] * videos),
                      thw=[(frames, side, per_frame // side)] * videos)
        if getattr(self, "tells_crops", False):  # each frame is a crop of its own; a newline of none (-1)
            crop = torch.arange(frames, device=pixels.device).repeat_interleave(per_frame)
            crop = torch.cat([crop, crop.new_full((per_video.shape[1] - crop.numel(),), -1)])
            enc.crops = [crop] * videos
        enc.model_seconds = model_seconds
        assign_signals(enc, list(per_video), needs, tower.config.hidden_size)
        return enc

    def apply(self, model: nn.Module, sel: Any, kwargs: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              image_inputs: dict, side: str | None) -> tuple[dict, AbstractContextManager]:
        """The default rebuild; a model that reads ``mm_encoder_outputs["video"]`` as one tensor
        (``video_as_one_run``: OneVision flattens its first two dimensions) gets the videos' ragged kept
        features as one ``[1, total, D]`` run."""
        kwargs, ctx = super().apply(model, sel, kwargs, input_ids, attention_mask, image_inputs, side)
        video = kwargs["mm_encoder_outputs"].get("video")
        if video is not None and self.video_as_one_run:
            video.pooler_output = torch.cat(video.pooler_output)[None]
            if side is not None and original(model, "_expand_multimodal_outputs") is not None:  # generate
                return kwargs, _stacked(ctx, overriding(model, "_expand_multimodal_outputs", _one_run_expansion(model)))
        return kwargs, ctx


def _one_run_expansion(model: nn.Module):
    """``generate``'s expansion of ``mm_encoder_outputs`` for beam search / ``num_return_sequences``
    (transformers 5.24 ``GenerationMixin._expand_multimodal_outputs``), for videos given as one run
    ``[1, total, D]``: the run is split into one piece per prompt row (its videos, counted by the row's
    video placeholders) for the stock expansion, which repeats each row's piece for that row's copies
    (``[A, A, B, B]``), then joined again. Given the one run as it is, the stock code would see one video
    and repeat the whole run (``[A, B, A, B]``), feeding row 1's copies row 0's video."""
    stock = original(model, "_expand_multimodal_outputs")

    def expand(input_ids, mm_encoder_output, expand_size=1, inputs_embeds=None):
        video = mm_encoder_output.get("video")
        if expand_size == 1 or video is None or input_ids is None:
            return stock(input_ids, mm_encoder_output, expand_size=expand_size, inputs_embeds=inputs_embeds)
        per_row = (input_ids == model.config.video_token_id).sum(-1).tolist()
        video.pooler_output = list(torch.split(video.pooler_output[0], [n for n in per_row if n]))
        out = stock(input_ids, mm_encoder_output, expand_size=expand_size, inputs_embeds=inputs_embeds)
        out["video"].pooler_output = torch.cat(list(out["video"].pooler_output))[None]
        return out

    return expand


@contextmanager
def _stacked(*contexts: AbstractContextManager):
    with ExitStack() as stack:
        for c in contexts:
            stack.enter_context(c)
        yield


def _joined(parts: list[tuple[str, Encoded]]) -> Encoded:
    """Per-kind encodings as one: the images' entries, then the videos' (``Encoded.modalities``)."""
    encs = [e for _, e in parts]

    def cat(name):
        values = [getattr(e, name) for e in encs]
        return None if all(v is None for v in values) else [x for e, v in zip(encs, values)
                                                             for x in (v if v is not None else [None] * len(e.features))]

    return Encoded(
        features=cat("features"), protected=cat("protected"), saliency=cat("saliency"), keys=cat("keys"),
        patch_hidden=cat("patch_hidden"), image_keys=cat("image_keys"), crops=cat("crops"), thw=cat("thw"),
        model_seconds=sum(e.model_seconds for e in encs), modalities=[kind for kind, e in parts for _ in e.features],
    )


# --- published configurations for the savings table (docs/savings.md, visprune.measure.savings) ---


def vicuna_7b_config(tiny: bool, vocab: int = 32000, **extra: Any):
    """Vicuna-7B (LLaMA-7B's shape), the language model of LLaVA-1.5-7B, LLaVA-NeXT-7B (Vicuna) and
    InstructBLIP Vicuna-7B; ``tiny``: 2 layers of width 64."""
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           vocab_size=vocab, **extra)
    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=vocab, max_position_embeddings=4096, **extra)


def clip_l336_config(tiny: bool):
    """CLIP ViT-L/14 at 336 px, the tower of LLaVA-1.5 and LLaVA-NeXT; ``tiny``: 56 px, 3 layers."""
    from transformers import CLIPVisionConfig

    if tiny:
        return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=56, patch_size=14)
    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=336, patch_size=14, projection_dim=768)
