"""LLaVA-OneVision (``llava_onevision``): any-resolution crops, interpolated and packed; videos.

Its SigLIP tower has no [CLS] token: the ``cls`` saliency falls back to received attention.

Videos (``pixel_values_videos``, ``[videos, frames, 3, H, W]``) are pruned within each video: a video
is one entry with its own budget over all its frames' tokens. The model's own ``get_video_features``
runs once with the same capture as images: every frame goes through the tower as a crop of its own,
then ``apply_pooling`` (a 2x2 bilinear resize of each frame's projected patch grid, the average of
each 2x2 window at even sizes) and one ``image_newline`` token appended per video. The per-patch
signals go through that same ``apply_pooling`` (the model's method, so the weights are its own), so
signal ``j`` of a video describes exactly feature ``j``; the newline gets NaN signals and is
protected, as the packed images' row-end newlines are. ``Encoded.thw`` is ``(frames, s, s)`` of the
pooled grid, the newline after it outside the grid (never a temporal repeat).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..measure import clock
from ..scoring.context import LAST_QK, TOWER
from .base import Capture, Encoded, assign_signals, tower_has_cls
from .llava_family import LlavaFamilyAdapter


class LlavaOnevisionAdapter(LlavaFamilyAdapter):
    model_types = ("llava_onevision",)
    packs = True
    one_grid = False  # crops packed with newline tokens
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
        pooled = base.apply_pooling(signals)  # [videos * frames, s * s, C], as the model pools features
        per_frame = pooled.shape[1]
        nan_line = torch.full((videos, 1, pooled.shape[-1]), math.nan, device=pooled.device, dtype=pooled.dtype)
        per_video = torch.cat([pooled.reshape(videos, frames * per_frame, -1), nan_line], dim=1)
        for f, s in zip(features, per_video):
            if f.shape[0] != s.shape[0]:
                raise RuntimeError(f"internal: {s.shape[0]} signals for {f.shape[0]} video features; please report")
        protected = [torch.isnan(s[:, 0]) | (s[:, 0] > 0.5) for s in per_video]
        side = math.isqrt(per_frame)
        enc = Encoded(features=features, protected=protected, image_keys=capture.image_keys([frames] * videos),
                      thw=[(frames, side, per_frame // side)] * videos)
        enc.model_seconds = model_seconds
        assign_signals(enc, list(per_video), needs, tower.config.hidden_size)
        return enc

    def apply(self, model: nn.Module, sel: Any, kwargs: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              image_inputs: dict, side: str | None) -> tuple[dict, AbstractContextManager]:
        """The default rebuild; the model reads ``mm_encoder_outputs["video"]`` as one tensor (it flattens
        the first two dimensions), so the videos' ragged kept features go as one ``[1, total, D]`` run."""
        kwargs, ctx = super().apply(model, sel, kwargs, input_ids, attention_mask, image_inputs, side)
        video = kwargs["mm_encoder_outputs"].get("video")
        if video is not None:
            video.pooler_output = torch.cat(video.pooler_output)[None]
        return kwargs, ctx


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
