"""Idefics3 and SmolVLM (``idefics3``, ``smolvlm``): SigLIP tower without [CLS], pixel shuffle, linear connector.

The two share one code path in transformers 5.24 (``SmolVLMModel`` is Idefics3's, generated from
it by the modular converter; it differs only in keeping one blank tile when a batch has no real
image, and in its processor's video support), so one adapter serves both.

The processor splits a picture into ``rows x cols`` tiles of the tower's size plus a global
(downscaled) tile, or sends only the global tile; ``pixel_values`` is ``[B, tiles, 3, H, W]``,
padded with all-zero tiles to the batch's most tiles. ``get_image_features`` drops those padding
tiles (``real_images_inds``: a tile whose every value is 0), runs the tower on the rest, and the
connector's pixel shuffle regroups each ``s x s`` block of neighbouring patches (``scale_factor``)
into the channels of one token before its linear map: ``(P/s)^2`` language-model tokens per tile.
The prompt holds one run of ``<image>`` placeholders per tile, each run announced by text tokens
(``<fake_token_around_image>``, ``<row_i_col_j>`` or ``<global-img>``, newlines). Those are
ordinary prompt tokens, not placeholders, so they are never dropped: pruning removes
``<image>`` tokens only.

Budgets span tiles: the real tiles of one prompt are one image to visprune (what
``get_image_features`` returns per sample), scored and budgeted together (``k`` and ``keep`` count
over all its tiles' tokens, ``energy`` reads their joint spectrum), so a tile the question does
not need can lose most of its tokens. With one picture per prompt (the usual question form) that
is one budget per picture; several pictures in one prompt share one budget, since the features
carry no picture boundaries (the processor does not return its ``rows`` / ``cols``).
Each image is one patch grid only when it is one tile (``do_image_splitting=False``), so
``pool`` is refused (``one_grid``); overlays draw the tiles and the global image as two panels
(:meth:`Idefics3Adapter.picture_views`).

Alignment: every per-patch signal goes through the connector's own ``pixel_shuffle``, which puts
the ``s x s`` patches of token ``j`` side by side in the channels; the signal of token ``j`` is
the mean over those ``s^2`` patches. The token's feature is one linear map of all ``s^2`` patches'
hidden states, weighted alike, so no one patch stands for it, and the mean (unlike the max) keeps
the ranking that the patches' attention taken together gives and the scale of one patch's signal.
Saliency: SigLIP has no [CLS], so it is the attention each patch *receives* from the tile's
patches, heads averaged (:func:`visprune.ops.received_attention`), in the scoring layer (default:
the last, whose output the connector reads). Padding patches of a tile smaller than the batch's
largest (``pixel_attention_mask``) are masked as keys by the tower, so they receive nothing, and
the mean is over the real queries (checked against the tower's eager attention maps,
``tests/test_prune_idefics3.py``).

The kept features go to the model as ``mm_encoder_outputs`` (its ``forward`` concatenates the
per-image list), so the tower runs once. The language model is Llama (SmolLM2 for SmolVLM), with
positions from ``position_ids``: ``positions="original"`` is honoured by the default rebuild, and
the in-LLM methods (FastV, DART, PyramidDrop) run on it (their hooks find it at
``model.model.text_model``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..callscope import this_thread
from ..measure import clock
from ..measure.savings import Section, after_connector, build, flops, meta, prefill
from ..prompt import USER_MARKERS
from .boxes import View
from .tiny import PATCH, Tiny, llama_config
from .base import Adapter, Capture, Encoded, encoder_layers, hidden_index_to_layer, assign_signals


class Idefics3Adapter(Adapter):
    model_types = ("idefics3", "smolvlm")
    image_input_keys = ("pixel_values", "pixel_attention_mask")
    position_modes = ("compact", "original")
    one_grid = False  # tiles plus the global picture, each its own grid
    # The chat template reads "User:<image>...<end_of_utterance>\nAssistant:"; "User:" / "Assistant:"
    # are in the defaults. Where the tokenizer keeps the tile markers on decoding (<row_1_col_1> ...),
    # the question starts after the last picture's <global-img> tile.
    user_markers = (*USER_MARKERS, "<global-img>")

    def check(self, model: nn.Module) -> None:
        base = getattr(model, "model", None)
        if base is None or not all(hasattr(base, a) for a in ("get_image_features", "vision_model", "connector")):
            raise TypeError(f"{type(model).__name__} lacks model.get_image_features / vision_model / connector")
        encoder_layers(base.vision_model)

    def vision_depth(self, model: nn.Module) -> int:
        return len(encoder_layers(model.model.vision_model))

    def picture_views(self, model: nn.Module, processor: Any, picture: Any, config: Any = None) -> tuple[list[View], int]:
        """Two panels where the processor splits the picture: its ``rows x cols`` tiles (the picture
        resized to a multiple of the tile size, cut row-major; each tile's pixel-shuffled tokens
        row-major), then the global image (the whole picture squashed to one tile); one panel where it
        sends the global image alone, whose tokens tile the picture and any padding the processor added
        below and to the right of it (``pixel_attention_mask``)."""
        out = processor.image_processor(images=[picture], return_tensors="pt", return_row_col_info=True)
        rows, cols = int(out["rows"][0][0]), int(out["cols"][0][0])
        side = self.tokens_per_side(model)
        if not rows:
            mask = out["pixel_attention_mask"][0, 0]
            tall, wide = int(mask[:, 0].sum()), int(mask[0].sum())
            box = (0.0, 0.0, mask.shape[1] / wide, mask.shape[0] / tall)
            return [View(side, side, box, 0)], side * side
        views = [View(side, side, (c / cols, r / rows, (c + 1) / cols, (r + 1) / rows), (r * cols + c) * side * side)
                 for r in range(rows) for c in range(cols)]
        n = rows * cols * side * side
        return views + [View(side, side, (0.0, 0.0, 1.0, 1.0), n, panel=1)], n + side * side

    @staticmethod
    def tokens_per_side(model: nn.Module) -> int:
        vis = model.config.vision_config
        return vis.image_size // vis.patch_size // model.config.scale_factor

    def encode(self, model: nn.Module, image_inputs: dict, needs: frozenset[str], config: Any) -> Encoded:
        base = model.model
        n = self.vision_depth(model)
        sal_layer = hidden_index_to_layer(config.layer, n) if config.layer is not None else n - 1
        capture = Capture(base.vision_model, needs, sal_layer, hidden_index_to_layer(config.text_layer, n))
        seen = {}

        def grab_mask(_m, args, kwargs):  # the patch mask of the real tiles, as the tower gets it
            seen["patches"] = kwargs.get("patch_attention_mask")

        handle = base.vision_model.register_forward_pre_hook(this_thread(grab_mask), with_kwargs=True)
        try:
            with capture.active():
                t0 = clock.now()
                out = base.get_image_features(pixel_values=image_inputs["pixel_values"],
                                              pixel_attention_mask=image_inputs.get("pixel_attention_mask"),
                                              return_dict=True)
                model_seconds = clock.now() - t0
        finally:
            handle.remove()
        side = self.tokens_per_side(model)
        # one [tiles * side^2, D] per sample (its real tiles, in scatter order); a sample without
        # pictures has no placeholders and gets no entry
        features = [f for f in out.pooler_output if len(f)]
        tiles = [len(f) // (side * side) for f in features]
        valid = seen["patches"].flatten(1) if seen.get("patches") is not None else None
        shuffled = self._shuffle(base.connector, capture.per_crop_signals(has_cls=False, valid=valid))
        per_image = [t.flatten(0, 1) for t in shuffled.split(tiles)]  # [tiles * side^2, C] per image
        enc = Encoded(features=features, protected=[torch.zeros(len(f), dtype=torch.bool, device=f.device)
                                                    for f in features],
                      image_keys=capture.image_keys(tiles), grids=[(side, side) if t == 1 else None for t in tiles])
        enc.model_seconds = model_seconds
        assign_signals(enc, per_image, needs, base.vision_model.config.hidden_size)  # channel 0: the [CLS] marker, zeros
        return enc

    @staticmethod
    def _shuffle(connector: nn.Module, signals: torch.Tensor) -> torch.Tensor:
        """``[tiles, P*P, C]`` per-patch signals grouped as the connector's pixel shuffle groups patches,
        each token's ``s^2`` patches averaged: ``[tiles, (P/s)^2, C]``."""
        tiles, _, channels = signals.shape
        s = int(connector.scale_factor)
        grouped = connector.pixel_shuffle(signals, s)  # [tiles, (P/s)^2, s^2 * C]: s^2 patches side by side
        return grouped.reshape(tiles, grouped.shape[1], s * s, channels).mean(2)


# --- savings at published size (docs/savings.md, visprune.measure.savings) ---

_SOURCE_SMOLVLM2 = (
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct as google-ai-edge/ai-edge-torch (ai_edge_torch/generative/examples/smolvlm2: "
    "vision_encoder.py, decoder.py; its verify.py defaults to that checkpoint) and kornia/kornia-rs "
    "(crates/kornia-vlm/src/smolvlm2: model.rs, mod.rs) write it out, agreeing on every value the count reads: "
    "SigLIP tower of 27 layers, width 1152, FFN 4304, 16 heads, 14 px patches on 384 px tiles (27 x 27 patches; "
    "ai-edge-torch writes 378 = 27 x 14 px), pixel shuffle scale factor 3 (81 tokens per tile), SmolLM2-1.7B "
    "language model of 24 layers, width 2048, FFN 8192, 32 query and 32 KV heads, vocabulary 49280, untied head; "
    "image splitting as kornia-rs's processor for the checkpoint (longest edge resized to 1536, 384 px tiles, "
    "plus the global tile). The rope base and context length differ between the two (ai-edge-torch 130000 / 8192, "
    "kornia-rs 273768 / 16384; kornia-rs's used) and do not enter the count"
)


def savings(tiny: bool) -> list[Section]:
    """SmolVLM2-2.2B-Instruct on a square image: resized to 1536 px, split into 4 x 4 tiles of 384 px plus the
    global tile (17 tower passes), 81 tokens per tile after the 3 x 3 pixel shuffle; pruned after the connector,
    across the image's tiles."""
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMVisionConfig

    if tiny:
        vis = SmolVLMVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=84, patch_size=14)
        text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           vocab_size=1000)
    else:
        vis = SmolVLMVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                  image_size=384, patch_size=14)
        text = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                           num_key_value_heads=32, vocab_size=49280, max_position_embeddings=16384,
                           rope_parameters={"rope_type": "default", "rope_theta": 273768.0}, tie_word_embeddings=False)
    cfg = SmolVLMConfig(vision_config=vis, text_config=text, scale_factor=3, image_token_id=text.vocab_size - 1)
    m = build(SmolVLMForConditionalGeneration, cfg)
    split = 4  # the longest edge resized to 4 tiles' width, so a square image is 4 x 4 tiles
    tiles = split * split + 1  # and the global tile
    side = vis.image_size // vis.patch_size
    per_tile = (side // cfg.scale_factor) ** 2
    n = tiles * per_tile
    # <fake_token_around_image><row_r_col_c> before each tile, a newline after each row, then
    # "\n<fake_token_around_image><global-img>" ... "<fake_token_around_image>": text tokens, never dropped
    markers = 2 * split * split + split + 4
    vision = flops(_tower_unmasked, m.model.vision_model, meta(tiles, 3, vis.image_size, vis.image_size))
    connector = flops(m.model.connector, meta(tiles, side * side, vis.hidden_size))
    rows = after_connector(n, vision, connector,
                           lambda length: prefill(m.model.text_model, m.lm_head, text.hidden_size, length), extra=markers)
    return [Section("SmolVLM2-2.2B", f"{n} tokens, {per_tile} per tile pixel-shuffled from {side * side} SigLIP patches, "
                    f"{split * split} tiles of {vis.image_size} px and the global tile (a square image); pruned after the "
                    f"connector, per image across its tiles; the {markers} tile-marker text tokens kept", rows,
                    source=_SOURCE_SMOLVLM2,
                    note=f"the {markers} marker tokens are counted as one token each (the last row's newline and the "
                    "one before <global-img> may tokenize as one).")]


def _tower_unmasked(tower: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The tower's forward (transformers 5.24, ``SmolVLMVisionTransformer.forward``) on whole tiles, without the
    all-true attention mask it would build: the mask code inspects the mask's values, which meta tensors do not
    have, and an all-true mask changes no matmul."""
    tiles, _, height, width = pixel_values.shape
    patch = tower.config.patch_size
    everywhere = torch.ones(tiles, height // patch, width // patch, dtype=torch.bool, device=pixel_values.device)
    hidden = tower.embeddings(pixel_values=pixel_values, patch_attention_mask=everywhere)
    return tower.post_layernorm(tower.encoder(inputs_embeds=hidden).last_hidden_state)


def _tiny(config: str, vision: str, scale: int, size: int, doc: str) -> Tiny:
    """Tiny Idefics3 / SmolVLM (``config`` / ``vision``: transformers config class names): SigLIP tower without
    [CLS], the connector's ``scale`` x ``scale`` pixel shuffle, Llama; ``Idefics3Processor`` splitting a
    picture into up to 2 x 2 tiles of ``size`` px plus the global one (``tiles=False``: the global one only).
    The tokenizer's image markers: ``<fake_token_around_image>`` (special, as its processor adds it),
    ``<global-img>`` and ``<row_i_col_j>`` (plain added tokens, so they survive decoding with
    ``skip_special_tokens`` and the question has to be found after them)."""

    def build(tok, image: int = size, tiles: bool = True):
        import transformers

        vision_config = getattr(transformers, vision)(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                                      num_attention_heads=4, image_size=image, patch_size=PATCH)
        return getattr(transformers, config)(vision_config=vision_config, text_config=llama_config(tok),
                                             scale_factor=scale, image_token_id=tok.convert_tokens_to_ids("<image>"))

    def processor(tok, config, image: int = size, tiles: bool = True, **_):
        from transformers import Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        ip = Idefics3ImageProcessorPil(size={"longest_edge": 2 * image}, max_image_size={"longest_edge": image},
                                       do_image_splitting=tiles)
        return Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=(image // PATCH // scale) ** 2)

    build.__doc__ = doc
    return Tiny(config.replace("Config", "ForConditionalGeneration"), build, processor,
                specials=("<image>", "<fake_token_around_image>", "<end_of_utterance>"),
                plain=("<global-img>", *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))))


TINY = {
    "idefics3": _tiny("Idefics3Config", "Idefics3VisionConfig", 2, 112, """Idefics3 layout (``idefics3``): SigLIP tower
    without [CLS] (8 x 8 patches per 112 px tile), the connector's 2 x 2 pixel shuffle (16 tokens per tile), Llama;
    ``Idefics3Processor`` splitting a picture into up to 2 x 2 tiles plus the global one (``tiles=False``: the
    global one only)."""),
    "smolvlm": _tiny("SmolVLMConfig", "SmolVLMVisionConfig", 4, 224, """SmolVLM layout (``smolvlm``): Idefics3's with a
    4 x 4 pixel shuffle (16 x 16 patches, 16 tokens per 224 px tile). The processor is ``Idefics3Processor``:
    ``SmolVLMProcessor`` writes the same image prompt but needs ``num2words`` and a video processor, neither a
    visprune dependency."""),
}
