"""The benchmark's geometries: random-weight LLaVA-1.5 models from tiny to real size and Qwen2.5-VL on video
clips (CPU-sized and real size), with their inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ... import testing
from ...adapters.qwen2_vl import qwen2_5_vl_7b_config, video_clip

GEOMETRIES = ("tiny", "small", "small-hd", "small-video", "llava-1.5-7b", "qwen2.5-vl-7b-video")
QUESTION = "what colour is the star ?"


@dataclass
class Geometry:
    """A benchmark model with the inputs of one prompt, one image (``inputs``); ``processor`` builds
    larger batches and prompts with several images (:func:`batch_inputs`).

    ``encode(questions, images)``: the inputs of one prompt per question about its list of images
    (a model folder's: its own chat prompt, :func:`visprune.evaluation.models.prompt_inputs`); None:
    the test models' LLaVA prompt. ``prune_processor``: what ``prune_`` is given as ``processor=`` (a
    model folder: its processor, as ``visprune eval`` gives it; the geometries: none, as measured).
    ``frames``: a video geometry's clip length; its prompts ask about clips (:func:`video_inputs`)."""

    name: str
    model: Any
    inputs: dict
    description: str
    processor: Any = None
    image_size: tuple[int, int] | None = None
    encode: Callable[[list[str], list[list]], Any] | None = None
    prune_processor: Any = None
    frames: int | None = None  # a video geometry: the frames of its first clip (None: images)


def llava_7b(device: str, dtype: torch.dtype, seed: int = 0, layers: tuple[int, int] | None = None):
    """LLaVA-1.5-7B at its real size with random weights, made directly on ``device`` in ``dtype``
    (no float32 copy on the host first: 7 B parameters are 14 GB in bf16, 28 GB in float32).

    The vocabulary keeps Vicuna's 32,064 rows (the output head's FLOPs are real); the prompt uses
    the test tokenizer's ids, which all lie inside it. ``layers``: (vision, text) depth override,
    for a quick check of this code path at full width; the geometry itself never sets it.
    """
    from transformers import LlavaForConditionalGeneration

    tok = testing.tokenizer()
    proc = testing.llava_processor(336, tok)
    cfg = llava_7b_config(*(layers or ()))
    text = cfg.text_config
    text.pad_token_id, text.bos_token_id, text.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    cfg.image_token_id = tok.convert_tokens_to_ids("<image>")
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, proc


LLAVA_7B_PARAMETERS = 7_063_427_072  # llava-hf/llava-1.5-7b-hf's count; tests/test_bench.py checks the build
LLAVA_7B_DESCRIPTION = ("LLaVA-1.5-7B at real size: CLIP ViT-L/14 at 336 px (576 visual tokens), 2-layer MLP "
                        "projector, Vicuna-7B-shaped Llama (4096 x 32 layers, 32,064-token vocabulary), random weights")



TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
SMALL = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
SMALL_TEXT = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=12)


def build_geometry(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Geometry:
    """The model and inputs of a benchmark geometry (random weights; nothing is downloaded).

    ``llava-1.5-7b`` and ``qwen2.5-vl-7b-video`` are built at their real size on ``device`` (about 14 and
    17 GB of weights in bf16); ``device="meta"`` gives their shapes without memory (no inputs can run there).
    """
    if name in ("small-video", "qwen2.5-vl-7b-video"):
        if name == "small-video":
            (model, proc), desc, frames, side = small_video(), SMALL_VIDEO_DESCRIPTION, VIDEO_FRAMES, VIDEO_SIDE
        else:
            (model, proc), desc = qwen2_5_vl_7b(device, dtype), QWEN_7B_DESCRIPTION
            frames, side = video_clip()
        model = model.to(device=device, dtype=dtype)
        geo = Geometry(name, model, {}, desc, proc, (side, side), frames=frames)
        geo.inputs = batch_inputs(geo, 1)
        return geo
    if name == "tiny":
        model, proc = testing.llava(image=56, vision=TINY, text=TINY_TEXT)
        desc = "tiny LLaVA: CLIP 32-wide x 3 layers at 56 px (16 tokens), Llama 32-wide x 2 layers"
    elif name == "small":
        model, proc = testing.llava(image=336, vision=SMALL, text=SMALL_TEXT)
        desc = ("small LLaVA: CLIP ViT-B-like tower (768 x 12 layers) at 336 px / 14 px patches = 576 visual tokens, "
                "Llama 768 x 12 layers (~110 M parameters without embeddings), random weights")
    elif name == "small-hd":
        model, proc = small_hd()
        desc = SMALL_HD_DESCRIPTION
    elif name == "llava-1.5-7b":
        model, proc = llava_7b(device, dtype)
        desc = LLAVA_7B_DESCRIPTION
    else:
        raise ValueError(f"unknown geometry {name!r}; valid: {', '.join(GEOMETRIES)}")
    side = proc.image_processor.crop_size["width"] * (2 if name == "small-hd" else 1)
    model = model.to(device=device, dtype=dtype)
    geo = Geometry(name, model, {}, desc, proc, (side, side))
    geo.inputs = batch_inputs(geo, 1)
    return geo


def batch_inputs(geo: Geometry, batch_size: int, images: int = 1, only: int | None = None) -> dict:
    """The inputs of ``batch_size`` prompts, each asking :data:`QUESTION` about ``images`` images, on
    the model's device and in its dtype. The images run from busy to plain (:func:`graded_images`), so
    spectral budgets differ between the samples of a batch; the batch is left-padded, as ``generate``
    wants it. ``only=i``: sample ``i`` of that batch alone (the same images). A video geometry asks
    about ``images`` clips per prompt instead (:func:`video_inputs`)."""
    if batch_size < 1 or images < 1:
        raise ValueError(f"batch_size and images must be >= 1, got {batch_size} and {images}")
    if geo.frames is not None:
        return video_inputs(geo, batch_size, images, only)
    param = next(geo.model.parameters())
    pictures = graded_images(batch_size * images, geo.image_size)
    if only is not None:
        pictures, batch_size = pictures[only * images:(only + 1) * images], 1
    if geo.encode is not None:
        groups = [pictures[i * images:(i + 1) * images] for i in range(batch_size)]
        inputs = geo.encode([QUESTION] * batch_size, groups)
    else:
        tok = geo.processor.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            inputs = geo.processor(images=pictures, text=[testing.prompt(QUESTION, images)] * batch_size,
                                   return_tensors="pt", padding=True)
        finally:
            tok.padding_side = side
    return {k: (v.to(device=param.device, dtype=param.dtype) if v.is_floating_point() else v.to(param.device))
            for k, v in inputs.items()}


def visual_tokens(model: Any, inputs: dict) -> int | None:
    """The visual placeholders of ``inputs``' prompts (every kind the model's adapter names): the
    tokens the unpruned language model receives for the images and videos. None where the prompt
    has none (IDEFICS: its language model cross-attends to the images instead)."""
    from ...adapters import get_adapter

    ids = get_adapter(model).visual_tokens(model).values()
    return sum(int((inputs["input_ids"] == i).sum()) for i in ids) or None


def graded_images(n: int, size: tuple[int, int], seed: int = 0) -> list:
    """``n`` pictures from busy to plain: picture ``i`` blends uniform noise, share ``1 - (i % 8) / 7``,
    into a red-and-black half-and-half picture. Eight in a row span the whole range, so E-AdaPrune's
    spectral budget keeps from about half of an image's tokens down to one or two (ragged budgets)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for i in range(n):
        share = 1 - (i % 8) / 7
        base = np.zeros((h, w, 3))
        base[:, : w // 2] = (200, 30, 30)
        noise = rng.integers(0, 256, (h, w, 3))
        out.append(Image.fromarray((base * (1 - share) + noise * share).astype(np.uint8)))
    return out


SMALL_HD_DESCRIPTION = ("small LLaVA-NeXT at high resolution: the `small` tower and language model, any-resolution "
                        "672 x 672 px images as a 2 x 2 grid of 336 px crops plus the whole image (5 crops, 2,880 tower "
                        "tokens; 2,928 visual tokens with the row-end newlines), random weights")


def small_hd():
    """LLaVA-NeXT's any-resolution layout at the `small` widths: every 672 x 672 image is cut into
    5 crops of 336 px (the 2 x 2 grid and the whole image resized)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    tok = testing.tokenizer()
    cfg = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=336, patch_size=14, **SMALL),
        text_config=LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id, max_position_embeddings=8192, **SMALL_TEXT),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", image_grid_pinpoints=HD_PINPOINTS,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, small_hd_processor(tok)


def small_hd_processor(tok=None):
    """The `small-hd` geometry's processor: LLaVA-NeXT's, 336 px crops, one 672 x 672 grid."""
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                    image_grid_pinpoints=HD_PINPOINTS)
    return LlavaNextProcessor(image_processor=ip, tokenizer=tok or testing.tokenizer(), patch_size=14,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)


HD_PINPOINTS = [[672, 672]]



def llava_7b_config(vision_layers: int = 24, text_layers: int = 32):
    """LLaVA-1.5-7B's published shapes (llava-hf/llava-1.5-7b-hf): CLIP ViT-L/14 at 336 px, Vicuna-7B."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=vision_layers, num_attention_heads=16,
            image_size=336, patch_size=14, projection_dim=768,
        ),
        text_config=LlamaConfig(
            hidden_size=4096, intermediate_size=11008, num_hidden_layers=text_layers, num_attention_heads=32,
            num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
        ),
        image_token_id=32000, vision_feature_layer=-2, vision_feature_select_strategy="default",
    )


VIDEO_FRAMES, VIDEO_SIDE = 8, 224
SMALL_VIDEO_DESCRIPTION = (
    "small Qwen2.5-VL on a video: the Qwen2.5-VL vision tower (window attention, full attention in 2 of 8 blocks) "
    "at 384 x 8 layers, 14 px patches, 2 frames per temporal patch; an 8-frame 224 x 224 clip (a square moving over "
    "a still background) = 4 temporal patches x 8 x 8 = 256 merged video tokens; Qwen2 language model 512 x 8 "
    "layers (GQA 8 / 2 heads, M-RoPE), random weights")


def small_video():
    """A Qwen2.5-VL-shaped model at CPU size (transformers' ``Qwen2_5_VLConfig``; the real model's patch,
    merge, temporal patch and 112 px window, smaller widths and depths) and the processor of its clip."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from ...testing import QWEN_SPECIALS, QwenInputs, qwen_tokenizer

    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = dict(depth=8, hidden_size=384, intermediate_size=1024, num_heads=6, out_hidden_size=512, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=112,
                  fullatt_block_indexes=[3, 7])
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    ip = Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=VIDEO_SIDE * VIDEO_SIDE, patch_size=14,
                                  merge_size=2, temporal_patch_size=2)
    return model, QwenInputs(ip, tok)


def moving_square(frames: int, side: int, seed: int = 0) -> list:
    """``frames`` pictures of a red square (a quarter of the side) crossing a still noise background."""
    from PIL import Image

    background = np.random.default_rng(seed).integers(0, 256, (side, side, 3)).astype(np.uint8)
    size = side // 4
    out = []
    for i in range(frames):
        frame = background.copy()
        x = (side - size) * i // max(frames - 1, 1)
        frame[side // 2 - size // 2: side // 2 + size // 2, x: x + size] = (200, 30, 30)
        out.append(Image.fromarray(frame))
    return out


def clip_frames(frames: int, i: int) -> int:
    """Frames of clip ``i`` of a batch: ``frames``, then three quarters, a half, a quarter of it, and
    round again (even counts: 2 frames per temporal patch), so a batch's clips differ in length."""
    return max(2, frames - (frames // 4) * (i % 4))


def video_inputs(geo: Geometry, batch_size: int = 1, clips: int = 1, only: int | None = None) -> dict:
    """``batch_size`` prompts, each asking :data:`QUESTION` about ``clips`` clips of the geometry's size
    (clip ``j`` of the batch: :func:`clip_frames` frames, its own background), left-padded, on the
    model's device and in its dtype. ``only=i``: sample ``i`` of that batch alone (the same clips)."""
    from ...testing import qwen_prompt

    videos = [moving_square(clip_frames(geo.frames, j), geo.image_size[0], seed=j) for j in range(batch_size * clips)]
    if only is not None:
        videos, batch_size = videos[only * clips:(only + 1) * clips], 1
    tok = geo.processor.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        inputs = geo.processor(text=[qwen_prompt(QUESTION, 0, clips)] * batch_size, videos=videos)
    finally:
        tok.padding_side = side
    param = next(geo.model.parameters())
    return {k: (v.to(device=param.device, dtype=param.dtype) if v.is_floating_point() else v.to(param.device))
            for k, v in inputs.items()}


QWEN_7B_PARAMETERS = 8_292_166_656  # Qwen/Qwen2.5-VL-7B-Instruct's count; tests/test_bench_video.py checks the build
QWEN_7B_DESCRIPTION = ("Qwen2.5-VL-7B at real size on a video: its 32-block window-attention tower (1280 wide, full "
                       "attention in 4 blocks), a 32-frame 448 x 448 clip (a square moving over a still background) = "
                       "16 temporal patches x 16 x 16 = 4,096 merged video tokens, Qwen2.5-7B-shaped language model "
                       "(3584 x 28 layers, GQA 28 / 4 heads, 152,064-token vocabulary), random weights")


def qwen2_5_vl_7b(device: str, dtype: torch.dtype, seed: int = 0, layers: tuple[int, int] | None = None):
    """Qwen2.5-VL-7B at its real size with random weights (the savings row's shapes,
    :func:`visprune.adapters.qwen2_vl.qwen2_5_vl_7b_config`), made directly on ``device`` in ``dtype``
    as :func:`llava_7b` is, and the processor of its 448 px clips. The vocabulary keeps its 152,064
    rows; the prompt uses the test tokenizer's ids, which all lie inside it. ``layers``: (vision,
    text) depth override for a quick check of this code path at full width."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from ...testing import QwenInputs, qwen_tokenizer

    tok = qwen_tokenizer()
    cfg = qwen2_5_vl_7b_config(layers=layers)
    text = cfg.text_config
    text.pad_token_id, text.bos_token_id, text.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    for name, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")):
        setattr(cfg, name, tok.convert_tokens_to_ids(token))
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    side = video_clip()[1]
    ip = Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=side * side, patch_size=14, merge_size=2,
                                  temporal_patch_size=2)
    return model, QwenInputs(ip, tok)
