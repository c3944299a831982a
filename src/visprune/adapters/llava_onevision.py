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
from .llava_next import PINPOINTS
from .tiny import IMAGE, PATCH, Tiny, llama_config


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


def _tiny_config(tok):
    """LLaVA-OneVision layout: SigLIP tower without [CLS], Llama, any-resolution crops; the tokenizer also has
    ``<video>`` (``config.video_token_id``): see ``onevision_video`` for video inputs."""
    from transformers import LlavaOnevisionConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=IMAGE, patch_size=PATCH, vision_use_head=False)
    return LlavaOnevisionConfig(
        vision_config=vision, text_config=llama_config(tok), image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_grid_pinpoints=PINPOINTS)


def _tiny_processor(tok, config, **_):
    from transformers import LlavaNextProcessor, LlavaOnevisionImageProcessorPil

    ip = LlavaOnevisionImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=PINPOINTS,
                                         do_pad=True)
    # LlavaOnevisionProcessor insists on a video processor, which needs torchvision (not installable
    # here); LlavaNextProcessor expands image placeholders by the same any-resolution rule.
    return LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH,
                              vision_feature_select_strategy="full", num_additional_image_tokens=0)


TINY = {"llava_onevision": Tiny("LlavaOnevisionForConditionalGeneration", _tiny_config, _tiny_processor,
                                specials=("<image>", "<video>"))}


def onevision_video(clips, size: int = IMAGE) -> torch.Tensor:
    """``pixel_values_videos`` ``[videos, frames, 3, size, size]`` as LlavaOnevisionVideoProcessor lays them
    out (its processor needs torchvision, not installable here): each frame resized to the tower's size,
    scaled to [0, 1], normalised with SigLIP's mean = std = 0.5. ``clips``: lists of PIL images, equal lengths."""
    import numpy as np

    def frame(im):
        a = np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
        return (torch.from_numpy(a).permute(2, 0, 1) - 0.5) / 0.5

    return torch.stack([torch.stack([frame(im) for im in clip]) for clip in clips])


def onevision_video_tokens(model: nn.Module, frames: int) -> int:
    """Placeholders of one ``frames``-frame video (LLaVA-OneVision, LLaVA-NeXT-Video): ``ceil(P/2)^2`` pooled
    tokens per frame (2x2 pooling), and on LLaVA-OneVision one newline."""
    side = -(-(model.config.vision_config.image_size // model.config.vision_config.patch_size) // 2)
    return frames * side * side + int(model.config.model_type == "llava_onevision")
