"""LLaVA-OneVision (``llava_onevision``): any-resolution crops, interpolated and packed; videos.

Its SigLIP tower has no [CLS] token: the ``cls`` saliency falls back to received attention.

Videos (``pixel_values_videos``, ``[videos, frames, 3, H, W]``) are pruned within each video
(:class:`~visprune.adapters.llava_family.FrameVideos`): every frame goes through the tower as a crop of
its own, then ``apply_pooling`` (a 2x2 bilinear resize of each frame's projected patch grid, the average
of each 2x2 window at even sizes) and one ``image_newline`` token appended per video. The per-patch
signals go through that same ``apply_pooling`` (the model's method), so signal ``j`` of a video
describes exactly feature ``j``; the newline gets NaN signals and is protected.
"""

from __future__ import annotations

import torch
from torch import nn

from .llava_family import FrameVideos, LlavaFamilyAdapter


class LlavaOnevisionAdapter(FrameVideos, LlavaFamilyAdapter):
    model_types = ("llava_onevision",)
    packs = True
    one_grid = False  # crops packed with newline tokens
    video_newline = True
    video_as_one_run = True  # the model flattens mm_encoder_outputs["video"].pooler_output's first two dims

    def pack(self, model: nn.Module, features: list, sizes: torch.Tensor, newline: torch.Tensor):
        """The model's own ``pack_image_features`` (OneVision's arguments: its token cap)."""
        return model.model.pack_image_features(features, sizes, image_newline=newline,
                                               vision_aspect_ratio=model.config.vision_aspect_ratio)

    def pool_frames(self, model: nn.Module, signals: torch.Tensor) -> torch.Tensor:
        return model.model.apply_pooling(signals)
