"""Tiny Qwen2-VL, Qwen2.5-VL, Qwen3-VL (and MoE) and Qwen3.5, and their inputs."""

from __future__ import annotations

import torch
from transformers import (
    PreTrainedTokenizerFast,
)


from .common import PATCH, _finish, tokenizer


QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>", *QWEN_SPECIALS]})
    return tok


def _qwen(kind: str, seed: int):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tok), max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    vision = dict(depth=3, embed_dim=32, num_heads=4, patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2,
                  in_channels=3)
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if kind == "qwen2_vl":
        cfg = Qwen2VLConfig(text_config=text, vision_config=dict(vision, hidden_size=32, mlp_ratio=2), **common)
        cls = Qwen2VLForConditionalGeneration
    elif kind == "qwen3_vl":  # interleaved M-RoPE, QK-norm language model, DeepStack after tower blocks 0 and 1
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        text = dict(text, head_dim=8, rope_parameters=dict(text["rope_parameters"], mrope_interleaved=True))
        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH, spatial_merge_size=2,
                      temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1])
        cfg = Qwen3VLConfig(text_config=text, vision_config=vision, **common)
        cls = Qwen3VLForConditionalGeneration
    elif kind == "qwen3_5":  # hybrid language model: a linear-attention (Gated DeltaNet) layer, then a full one
        from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

        text = dict(text, head_dim=8, layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
                    linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
                    rope_parameters=dict(text["rope_parameters"], mrope_interleaved=True, partial_rotary_factor=1.0))
        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH, spatial_merge_size=2,
                      temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64)
        cfg = Qwen3_5Config(text_config=text, vision_config=vision, **common)
        cls = Qwen3_5ForConditionalGeneration
    elif kind == "qwen3_5_moe":  # the same hybrid, its MLPs a mixture of experts (4 experts, 2 per token, one shared)
        from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

        text = dict(text, head_dim=8, layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
                    linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
                    moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                    rope_parameters=dict(text["rope_parameters"], mrope_interleaved=True, partial_rotary_factor=1.0))
        text.pop("intermediate_size")
        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH, spatial_merge_size=2,
                      temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64)
        cfg = Qwen3_5MoeConfig(text_config=text, vision_config=vision, **common)
        cls = Qwen3_5MoeForConditionalGeneration
    elif kind == "qwen3_vl_moe":  # the same, with a mixture-of-experts language model (4 experts, 2 per token)
        from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

        text = dict(text, head_dim=8, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                    rope_parameters=dict(text["rope_parameters"], mrope_interleaved=True))
        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH, spatial_merge_size=2,
                      temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1])
        cfg = Qwen3VLMoeConfig(text_config=text, vision_config=vision, **common)
        cls = Qwen3VLMoeForConditionalGeneration
    else:
        vision = dict(vision, hidden_size=32, intermediate_size=64, out_hidden_size=32, window_size=56,
                      fullatt_block_indexes=[1])
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
        cls = Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(seed)
    model = _finish(cls(cfg))
    ip = Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28, patch_size=PATCH,
                               merge_size=2, temporal_patch_size=2)
    return model, QwenInputs(ip, tok, timestamps=kind in ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"))


VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


class QwenInputs:
    """Builds Qwen2-VL inputs the way ``Qwen2VLProcessor`` does (which cannot be built here: it
    insists on a video processor, which needs torchvision): each ``<|image_pad|>`` becomes
    ``t*h*w / merge**2`` placeholders, and ``mm_token_type_ids`` marks them (1 image, 2 video).

    ``videos``: a list of videos, each a list of PIL frames of one size, laid out as
    ``Qwen2VLVideoProcessor`` lays them out (``_preprocess`` / ``patchify``, transformers 5.23): frames
    resized and normalised as the image processor does (its min / max pixels, not the video
    processor's), an odd frame count padded by repeating the last frame, each ``temporal_patch_size``
    frames one temporal patch; each video's ``<|vision_start|><|video_pad|><|vision_end|>`` becomes
    ``t*h*w / merge**2`` placeholders, or with ``timestamps`` (Qwen3-VL, Qwen3.5) one
    ``<x.x seconds><|vision_start|>...<|vision_end|>`` run per temporal patch, as their processors
    write it (at 1 frame per second).
    """

    def __init__(self, image_processor, tok, timestamps: bool = False):
        self.image_processor, self.tokenizer, self.timestamps = image_processor, tok, timestamps

    def __call__(self, images=None, text=(), videos=None, return_tensors="pt", padding=True):
        merge = self.image_processor.merge_size**2
        expanded = list(text)
        out = {}
        if images:
            pix = self.image_processor(images=images, return_tensors="pt")
            counts = iter((pix["image_grid_thw"].prod(-1) // merge).tolist())
            expanded = [self._expand(t, "<|image_pad|>", lambda: "<|image_pad|>" * next(counts)) for t in expanded]
            out["pixel_values"], out["image_grid_thw"] = pix["pixel_values"], pix["image_grid_thw"]
        if videos:
            out["pixel_values_videos"], out["video_grid_thw"] = self.video_pixels(videos)
            grids = iter(out["video_grid_thw"].tolist())
            expanded = [self._expand(t, VIDEO, lambda: self._video_text(next(grids), merge)) for t in expanded]
        enc = self.tokenizer(expanded, return_tensors="pt", padding=True)
        ids = enc["input_ids"]
        image_id, video_id = (self.tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>"))
        enc["mm_token_type_ids"] = (ids == image_id).int() + 2 * (ids == video_id).int()
        enc.update(out)
        return enc

    @staticmethod
    def _expand(text: str, marker: str, replacement) -> str:
        parts = text.split(marker)
        return parts[0] + "".join(replacement() + p for p in parts[1:])

    def _video_text(self, grid, merge: int) -> str:
        t, h, w = grid
        frame = "<|video_pad|>" * (h * w // merge)
        if not self.timestamps:
            return "<|vision_start|>" + frame * t + "<|vision_end|>"
        step = self.image_processor.temporal_patch_size
        return "".join(f"<{(i * step + (step - 1) / 2):.1f} seconds><|vision_start|>{frame}<|vision_end|>"
                       for i in range(t))

    def video_pixels(self, videos) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixel_values_videos, video_grid_thw)`` of a list of videos (lists of PIL frames)."""
        step = self.image_processor.temporal_patch_size
        rows, grids = [], []
        for frames in videos:
            frames = list(frames) + [frames[-1]] * (-len(frames) % step)  # as the video processor pads
            one = self.image_processor(images=frames, temporal_patch_size=1, return_tensors="pt")
            _, h, w = one["image_grid_thw"][0].tolist()
            per_frame = one["pixel_values"].reshape(len(frames), h * w, -1)  # [F, N, C*p*p], merge order
            n, width = per_frame.shape[1:]
            c = 3
            pairs = per_frame.reshape(len(frames) // step, step, n, c, width // c)  # [t, step, N, C, p*p]
            rows.append(pairs.permute(0, 2, 3, 1, 4).reshape(-1, c * step * (width // c)))  # [t*N, C*step*p*p]
            grids.append([len(frames) // step, h, w])
        return torch.cat(rows), torch.tensor(grids)


def qwen2_vl(seed: int = 0):
    return _qwen("qwen2_vl", seed)


def qwen2_5_vl(seed: int = 0):
    return _qwen("qwen2_5_vl", seed)


def qwen3_vl(seed: int = 0):
    return _qwen("qwen3_vl", seed)


def qwen3_vl_moe(seed: int = 0):
    return _qwen("qwen3_vl_moe", seed)


def qwen3_5(seed: int = 0):
    return _qwen("qwen3_5", seed)


def qwen3_5_moe(seed: int = 0):
    return _qwen("qwen3_5_moe", seed)


def qwen_prompt(question: str, n_images: int = 1, n_videos: int = 0) -> str:
    """A chat prompt with ``n_images`` images, then ``n_videos`` videos, then the question."""
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    return f"<|im_start|>user\n{image * n_images}{VIDEO * n_videos}{question}<|im_end|>\n<|im_start|>assistant\n"
