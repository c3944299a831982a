"""LLaVA-NeXT-Video (``llava_next_video``): images any-resolution as LLaVA-NeXT; videos pooled per frame.

Videos (``pixel_values_videos``, ``[videos, frames, 3, H, W]``) are pruned within each video
(:class:`~visprune.adapters.llava_family.FrameVideos`): every frame goes through the CLIP tower as a crop
of its own ([CLS] dropped under the ``default`` strategy), then the ``vision_resampler`` pools the patch
grid (``spatial_pool_stride`` windows, average by default) before the projector; no newline per video.
The per-patch signals are pooled over the same windows: with the resampler's own pool when it averages,
else (``max`` / ``conv``) with the window mean (docs/choices.md).
"""

from __future__ import annotations

import torch
from torch import nn

from .llava_family import FrameVideos
from .llava_next import LlavaNextAdapter, tiny_fields, tiny_processor
from .tiny import Tiny


class LlavaNextVideoAdapter(FrameVideos, LlavaNextAdapter):
    model_types = ("llava_next_video",)
    tower_crops = False  # VisionZip's official any-resolution code is LLaVA-NeXT's; not run on this model

    def pool_frames(self, model: nn.Module, signals: torch.Tensor) -> torch.Tensor:
        frames, patches, channels = signals.shape
        side = int(round(patches**0.5))
        grid = signals.transpose(1, 2).reshape(frames, channels, side, side)
        resampler = model.model.vision_resampler
        if isinstance(resampler.pool, nn.AvgPool2d):
            pooled = resampler.pool(grid)
        else:
            stride = model.config.spatial_pool_stride
            pooled = nn.functional.avg_pool2d(grid, kernel_size=stride, stride=stride)
        return pooled.flatten(2).transpose(1, 2)


def _tiny_config(tok):
    """LLaVA-NeXT-Video layout: LLaVA-NeXT's CLIP / any-resolution images, videos pooled 2x2 per frame
    (``spatial_pool_stride=2``, average); the tokenizer also has ``<video>``. Video inputs:
    ``onevision_video`` (same layout, [videos, frames, 3, H, W]) with CLIP-free 0.5 normalisation."""
    from transformers import LlavaNextVideoConfig

    return LlavaNextVideoConfig(**tiny_fields(tok), video_token_id=tok.convert_tokens_to_ids("<video>"),
                                spatial_pool_stride=2, spatial_pool_mode="average")


TINY = {"llava_next_video": Tiny("LlavaNextVideoForConditionalGeneration", _tiny_config, tiny_processor,
                                 specials=("<image>", "<video>"))}
