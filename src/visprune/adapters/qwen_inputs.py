"""The Qwen-VL family's tiny test models and inputs: the chat prompt, ``QwenInputs`` (the processor), and
what the tiny Qwen2-VL / 2.5-VL / 3-VL / 3.5 configs share (each adapter module declares its own ``TINY``
with :func:`qwen_tiny`)."""

from __future__ import annotations

import copy

import torch

from .tiny import PATCH, Tiny

QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
# the tiny Qwen3-VL / Qwen3.5 tower (Qwen2-VL's take ``embed_dim`` / ``in_channels`` instead)
QWEN3_VISION = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH, spatial_merge_size=2,
                    temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64)
QWEN2_VISION = dict(depth=3, embed_dim=32, num_heads=4, patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2,
                    in_channels=3)


def qwen_prompt(question: str, n_images: int = 1, n_videos: int = 0) -> str:
    """A chat prompt with ``n_images`` images, then ``n_videos`` videos, then the question."""
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    return f"<|im_start|>user\n{image * n_images}{VIDEO * n_videos}{question}<|im_end|>\n<|im_start|>assistant\n"


def qwen_tiny(config: str, model: str, vision: dict, timestamps: bool = True, rope: dict | None = None,
              drop: tuple[str, ...] = (), doc: str = "", **text) -> Tiny:
    """A tiny Qwen-VL model: the transformers ``config`` / ``model`` classes, the tower's ``vision`` fields, the
    language model's fields beyond the shared ones (``text``; ``rope``: extra ``rope_parameters``; ``drop``:
    shared fields to leave out), ``timestamps``: videos written per temporal patch (Qwen3-VL, Qwen3.5)."""

    def build(tok):
        import transformers

        ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
        fields = dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=len(tok), max_position_embeddings=512, pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2], **(rope or {})},
            **copy.deepcopy(text))
        for name in drop:
            fields.pop(name)
        return getattr(transformers, config)(
            text_config=fields, vision_config=copy.deepcopy(vision), image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"])

    def processor(tok, config, **_):
        from transformers import Qwen2VLImageProcessorPil

        ip = Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28, patch_size=PATCH,
                                      merge_size=2, temporal_patch_size=2)
        return QwenInputs(ip, tok, timestamps=timestamps)

    build.__doc__ = doc
    return Tiny(model, build, processor, specials=("<image>", *QWEN_SPECIALS))


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
