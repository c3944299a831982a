"""Tiny LLaVA, LLaVA-NeXT and LLaVA-OneVision."""

from __future__ import annotations

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaProcessor,
    SiglipVisionConfig,
)


from .common import IMAGE, PATCH, _clip_vision, _finish, _text_config, tokenizer


def llava_processor(image: int = IMAGE, tok=None) -> LlavaProcessor:
    """LLaVA-1.5's processor for ``image``-pixel square crops, 14-px patches, with the test tokenizer."""
    ip = CLIPImageProcessorPil(size={"shortest_edge": image}, crop_size={"height": image, "width": image})
    return LlavaProcessor(
        image_processor=ip, tokenizer=tok or tokenizer(), patch_size=PATCH, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def llava(
    seed: int = 0, image: int = IMAGE, vision: tuple[int, int] | dict = (32, 3), text: tuple[int, int] | dict = (32, 2),
    tok=None,
):
    """LLaVA-1.5 layout: CLIP tower, Llama, 14-px patches. ``vision`` / ``text``: (hidden, layers) of the
    tiny default shapes, or a dict of ``CLIPVisionConfig`` / ``LlamaConfig`` fields (the benchmark's sizes)."""
    tok = tok or tokenizer()
    if isinstance(vision, dict):
        vision_config = CLIPVisionConfig(image_size=image, patch_size=PATCH, **vision)
    else:
        vision_config = _clip_vision(image, *vision)
    if isinstance(text, dict):
        text_config = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, max_position_embeddings=2048, **text)
    else:
        text_config = _text_config(tok, *text)
    cfg = LlavaConfig(
        vision_config=vision_config, text_config=text_config, image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = _finish(LlavaForConditionalGeneration(cfg))
    return model, llava_processor(image, tok)


PINPOINTS = [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE]]


def _next_config(tok) -> dict:
    """What LLaVA-NeXT and LLaVA-NeXT-Video configs share: the CLIP tower, the any-resolution grid."""
    return dict(vision_config=_clip_vision(), text_config=_text_config(tok), image_token_id=tok.convert_tokens_to_ids("<image>"),
                vision_feature_layer=-2, vision_feature_select_strategy="default", image_grid_pinpoints=PINPOINTS)


def _next_processor(tok) -> LlavaNextProcessor:
    ip = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=PINPOINTS
    )
    return LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)


def llava_next(seed: int = 0):
    tok = tokenizer()
    torch.manual_seed(seed)
    model = _finish(LlavaNextForConditionalGeneration(LlavaNextConfig(**_next_config(tok))))
    return model, _next_processor(tok)


def llava_next_video(seed: int = 0):
    """Tiny LLaVA-NeXT-Video: LLaVA-NeXT's CLIP / any-resolution images, videos pooled 2x2 per frame
    (``spatial_pool_stride=2``, average); the tokenizer also has ``<video>``. Video inputs:
    :func:`onevision_video` (same layout, [videos, frames, 3, H, W]) with CLIP-free 0.5 normalisation."""
    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    cfg = LlavaNextVideoConfig(**_next_config(tok), video_token_id=tok.convert_tokens_to_ids("<video>"),
                               spatial_pool_stride=2, spatial_pool_mode="average")
    torch.manual_seed(seed)
    model = _finish(LlavaNextVideoForConditionalGeneration(cfg))
    return model, _next_processor(tok)


def llava_onevision(seed: int = 0):
    """Tiny LLaVA-OneVision; its tokenizer also has ``<video>`` (``config.video_token_id``): see
    :func:`onevision_video` for video inputs."""
    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    pinpoints = [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE]]
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=IMAGE,
        patch_size=PATCH, vision_use_head=False,
    )
    cfg = LlavaOnevisionConfig(
        vision_config=vision, text_config=_text_config(tok), image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1, vision_feature_select_strategy="full", image_grid_pinpoints=pinpoints,
    )
    torch.manual_seed(seed)
    model = _finish(LlavaOnevisionForConditionalGeneration(cfg))
    ip = LlavaOnevisionImageProcessorPil(
        size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=pinpoints, do_pad=True
    )
    # LlavaOnevisionProcessor insists on a video processor, which needs torchvision (not installable
    # here); LlavaNextProcessor expands image placeholders by the same any-resolution rule.
    proc = LlavaNextProcessor(
        image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
    )
    return model, proc


def onevision_video(clips, size: int = IMAGE) -> torch.Tensor:
    """``pixel_values_videos`` ``[videos, frames, 3, size, size]`` as LlavaOnevisionVideoProcessor lays them
    out (its processor needs torchvision, not installable here): each frame resized to the tower's size,
    scaled to [0, 1], normalised with SigLIP's mean = std = 0.5. ``clips``: lists of PIL images, equal lengths."""
    import numpy as np

    def frame(im):
        a = np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
        return (torch.from_numpy(a).permute(2, 0, 1) - 0.5) / 0.5

    return torch.stack([torch.stack([frame(im) for im in clip]) for clip in clips])


def onevision_video_tokens(model, frames: int) -> int:
    """Placeholders of one ``frames``-frame video: ``ceil(P/2)^2`` pooled tokens per frame (2x2 pooling), and
    on LLaVA-OneVision one newline."""
    side = -(-(model.config.vision_config.image_size // model.config.vision_config.patch_size) // 2)
    return frames * side * side + int(model.config.model_type == "llava_onevision")


BUILDERS = {"llava": llava, "llava_next": llava_next, "llava_onevision": llava_onevision}
