"""InternVL 3 (``internvl``): InternViT with [CLS], a pixel shuffle (2 x 2 patches into one token), dynamic tiles.

``InternVLModel.get_image_features`` runs InternViT on every tile (448 px, 32 x 32 patches plus a
[CLS]), takes the ``vision_feature_layer`` output (-1: the last layer's, after the tower's final
norm, an identity with mean pooling), drops the [CLS] (``vision_feature_select_strategy="default"``),
and regroups each 2 x 2 block of patches into one token of 4x the channels (``pixel_shuffle``,
``downsample_ratio=0.5``: 256 tokens per tile) before the MLP projector. The processor cuts an
image into up to 12 tiles plus a thumbnail and puts *all* of its tiles' tokens in one run between
``<img>`` / ``</img>``, text tokens that are not placeholders and are never dropped.

Alignment: every per-patch signal is regrouped by the model's own ``pixel_shuffle`` and averaged
over the 2 x 2 patches it stacks, so signal ``j`` of a tile describes exactly LM token ``j``.
Saliency: InternViT has a [CLS] (it is trained with it; the LM just never sees it), so it is the
[CLS] row of the attention in the scoring layer (default: the one whose output the projector
reads), heads averaged, as FasterVLM ranks LLaVA's tokens, averaged over each token's 2 x 2
patches: the share of the [CLS]'s attention that the token's patches hold together, per patch.
The [CLS] query is the one query that summarises the tile; the attention every patch receives
(the proxy for towers without one, Gemma 3, Qwen2-VL) would rank by what patches look at, not by
what the tile's summary reads. The pixel shuffle is why the 2 x 2 grouping is done at all:
FasterVLM's ranking on InternVL2-26B was reported below random at 95% pruning, blamed on scoring
patches one by one when the LM sees them four at a time; here a token is ranked by exactly the
four patches it carries (checked against the tower's eager attention maps,
``tests/test_prune_internvl.py``).

Tiles: the model's input does not say which tiles form one image; the prompt does (one
placeholder run per image), so :meth:`InternVLAdapter.per_image` joins the tiles of each run,
thumbnail included, into one visprune image. The budget is per image across its tiles: ``keep=0.25``
of a 2-tile image keeps a quarter of its 3 x 256 tokens, wherever they are, and tokens of different
tiles compete on one min-max-normalised score (each tile's [CLS] row is one softmax over that
tile's own patches, so the tiles' scales are alike; the thumbnail competes with the tiles it
overlaps). Videos would be frames of one tile each, each frame its own ``<img>`` run, so one image
per frame (read from the processor's code, not tested: its video processor needs torchvision).

In-LLM methods (FastV, DART, PyramidDrop) run on InternVL 3's Qwen2 language models; on Qwen3
(InternVL 3.5: QK-norm) they are refused by their own check, like any other language model.
"""

from __future__ import annotations

import sys
import zlib
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..batching import PromptLayout
from ..measure import clock
from .boxes import View
from .qwen_inputs import QWEN_SPECIALS
from .tiny import PATCH, Tiny
from ..measure.savings import Section, after_connector, build, flops, meta, prefill
from .base import Adapter, Capture, Encoded, encoder_layers, hidden_index_to_layer, assign_signals


class InternVLAdapter(Adapter):
    model_types = ("internvl",)
    image_input_keys = ("pixel_values",)
    position_modes = ("compact", "original")
    # an image is up to 12 tiles and a thumbnail, each its own 16 x 16 grid: no one grid per image
    one_grid = False
    # the chat template's "<|im_start|>user\n" / "<|im_start|>assistant\n" decode to "user\n" /
    # "assistant\n" (the defaults cover them); <img> / </img> are special tokens, skipped when decoding

    def check(self, model: nn.Module) -> None:
        base = getattr(model, "model", None)
        if base is None or not all(hasattr(base, a) for a in ("get_image_features", "vision_tower",
                                                                "multi_modal_projector", "pixel_shuffle")):
            raise TypeError(f"{type(model).__name__} lacks model.get_image_features / vision_tower / "
                            "multi_modal_projector / pixel_shuffle")
        encoder_layers(base.vision_tower)
        layer, strategy = base.config.vision_feature_layer, base.config.vision_feature_select_strategy
        if not isinstance(layer, int) or strategy != "default":
            raise TypeError(f"visprune's InternVL adapter reads one feature layer with the [CLS] dropped "
                            f"(vision_feature_select_strategy='default'); this model has vision_feature_layer={layer!r}, "
                            f"strategy {strategy!r}")

    def vision_depth(self, model: nn.Module) -> int:
        return len(encoder_layers(model.model.vision_tower))

    def picture_views(self, model: nn.Module, processor: Any, picture: Any, config: Any = None) -> tuple[list[View], int]:
        """Two panels where the processor tiles the picture: the tiles (the whole picture resized to
        ``cols x rows`` tiles, the grid ``get_optimal_tiled_canvas`` picks, row-major; each tile's
        pixel-shuffled ``s x s`` tokens row-major), then the thumbnail (the whole picture squashed to
        one tile); one panel where it is one tile."""
        ip = processor.image_processor
        tiles = int(ip(images=[picture], return_tensors="pt")["num_patches"][0])
        vis = model.config.vision_config
        size = vis.image_size if isinstance(vis.image_size, int) else vis.image_size[0]
        patch = vis.patch_size if isinstance(vis.patch_size, int) else vis.patch_size[0]
        side = int(round(size // patch * model.config.downsample_ratio))
        whole = (0.0, 0.0, 1.0, 1.0)
        if tiles == 1:
            return [View(side, side, whole, 0)], side * side
        w, h = picture.size
        cols, rows = sys.modules[type(ip).__module__].get_optimal_tiled_canvas(
            (h, w), (ip.size["height"], ip.size["width"]), ip.min_patches, ip.max_patches)
        if cols * rows != tiles - 1:
            raise RuntimeError(f"internal: {tiles - 1} tiles for a {cols} x {rows} canvas; please report")
        views = [View(side, side, (c / cols, r / rows, (c + 1) / cols, (r + 1) / rows), (r * cols + c) * side * side)
                 for r in range(rows) for c in range(cols)]
        return views + [View(side, side, whole, cols * rows * side * side, panel=1)], tiles * side * side

    def encode(self, model: nn.Module, image_inputs: dict, needs: frozenset[str], config: Any) -> Encoded:
        """One entry per *tile* (what the model's input holds); :meth:`per_image` joins them."""
        base = model.model
        n = self.vision_depth(model)
        feature_layer = hidden_index_to_layer(base.config.vision_feature_layer, n)
        sal_layer = hidden_index_to_layer(config.layer, n) if config.layer is not None else feature_layer
        capture = Capture(base.vision_tower, needs, sal_layer, hidden_index_to_layer(config.text_layer, n))
        with capture.active():
            t0 = clock.now()
            out = base.get_image_features(pixel_values=image_inputs["pixel_values"], return_dict=True)
            model_seconds = clock.now() - t0
        features = list(out.pooler_output)  # one [256, D] per tile
        # the patches as the model keeps them: [CLS] (token 0) dropped, and the [CLS] marker channel with it
        signals = capture.per_crop_signals(has_cls=True)[:, 1:, 1:].contiguous()
        grouped = self._group(base, signals) if signals.shape[-1] else None
        side = int(len(features[0]) ** 0.5) if features else 0
        enc = Encoded(features=features, protected=[torch.zeros(len(f), dtype=torch.bool, device=f.device)
                                                    for f in features],
                      image_keys=capture.image_keys([1] * len(features)), grids=[(side, side)] * len(features))
        enc.model_seconds = model_seconds
        assign_signals(enc, grouped if grouped is not None else [], needs, base.vision_tower.config.hidden_size, first=0)
        return enc

    @staticmethod
    def _group(base: nn.Module, signals: torch.Tensor) -> torch.Tensor:
        """``[tiles, P, C]`` per-patch signals -> ``[tiles, P/4, C]``: the model's own ``pixel_shuffle``
        stacks each token's 2 x 2 patches into 4 blocks of ``C`` channels, which are averaged."""
        tiles, patches, channels = signals.shape
        side = int(patches**0.5)
        ratio = base.config.downsample_ratio
        stacked = base.pixel_shuffle(signals.reshape(tiles, side, side, channels), scale_factor=ratio)
        per_token = round(1 / ratio) ** 2
        return stacked.reshape(tiles, -1, per_token, channels).mean(2)

    def per_image(self, model: nn.Module, enc: Encoded, layout: PromptLayout) -> Encoded:
        """Tiles joined into images: each run of placeholders in the prompt (row-major, the order the
        model scatters features in) is one image, its length the tokens of its tiles."""
        if not enc.features:
            return enc
        per_tile = len(enc.features[0])
        runs = [n for row in layout.ids for n in _runs(row, layout.image_token_id)]
        tiles = [n // per_tile for n in runs]
        if any(n % per_tile for n in runs) or sum(tiles) != len(enc.features):
            raise ValueError(f"the prompt's image placeholder runs ({runs}) do not match {len(enc.features)} tiles of "
                             f"{per_tile} tokens; build inputs with the model's processor (one <img>...</img> run per image)")
        if all(t == 1 for t in tiles):
            return enc

        def join(values):
            return None if values is None else [torch.cat(part) for part in _split(values, tiles)]

        keys = None if enc.image_keys is None else [
            zlib.crc32(repr(part).encode()) if len(part) > 1 else part[0] for part in _split(enc.image_keys, tiles)]
        grids = [g[0] if len(g) == 1 else None for g in _split(enc.grids, tiles)]
        joined = Encoded(features=join(enc.features), protected=join(enc.protected), saliency=join(enc.saliency),
                         patch_hidden=join(enc.patch_hidden), image_keys=keys, keys=join(enc.keys), grids=grids,
                         model_seconds=enc.model_seconds, extras={**enc.extras, "tiles": tiles})
        return joined

    def apply(self, model: nn.Module, sel: Any, kwargs: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              image_inputs: dict, side: str | None) -> tuple[dict, AbstractContextManager]:
        """The default rebuild; InternVL scatters ``mm_encoder_outputs["image"].pooler_output`` as one
        tensor, so the ragged kept features go as one ``[1, total, D]`` run."""
        kwargs, ctx = super().apply(model, sel, kwargs, input_ids, attention_mask, image_inputs, side)
        kept = torch.cat(sel.kept_features)[None]
        kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=kept)}
        return kwargs, ctx


def _runs(row: list[int], token: int) -> list[int]:
    """Lengths of the runs of ``token`` in ``row``, in order."""
    runs, n = [], 0
    for t in row:
        if t == token:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs + [n] if n else runs


def _split(values: list, sizes: list[int]) -> list[list]:
    out, start = [], 0
    for n in sizes:
        out.append(values[start : start + n])
        start += n
    return out


# --- savings at published size (docs/savings.md, visprune.measure.savings) ---


def savings(tiny: bool) -> list[Section]:
    """InternVL3-8B (OpenGVLab/InternVL3-8B-hf): InternViT-300M on each 448 px tile, pixel shuffle (2 x 2 patches
    per token, 256 per tile), MLP projector, Qwen2.5-7B. One tile (an image up to 448 px), and the 2 x 2 tiles plus
    thumbnail the processor cuts an 896 px square image into."""
    return [_internvl(tiny, 1), _internvl(tiny, 5)]


def _internvl(tiny: bool, tiles: int) -> Section:
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    if tiny:
        text = dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
        vis = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=112,
                   patch_size=14)
        image_token = 999
    else:
        # OpenGVLab/InternVL3-8B-hf: text_config is InternVL3-8B's llm_config (Qwen2.5-7B with InternVL's
        # tokens), vision_config InternViT-300M-448px-V2.5 as transformers' conversion writes it
        text = dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                    num_attention_heads=28, num_key_value_heads=4, vocab_size=151674, max_position_embeddings=32768,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6})
        vis = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=448, patch_size=14, attention_bias=True, norm_type="layer_norm", use_qk_norm=False,
                   use_mean_pooling=True)
        image_token = 151667
    cfg = InternVLConfig(text_config=text, vision_config=vis, image_token_id=image_token, downsample_ratio=0.5,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    m = build(InternVLForConditionalGeneration, cfg)
    size = vis["image_size"]
    patches = (size // 14) ** 2
    n = tiles * patches // 4  # the pixel shuffle: 2 x 2 patches per token
    vision = flops(m.model.vision_tower, meta(tiles, 3, size, size))
    connector = flops(m.model.multi_modal_projector, meta(tiles, patches // 4, 4 * vis["hidden_size"]))
    width = text["hidden_size"]
    rows = after_connector(n, vision, connector, lambda length: prefill(m.model.language_model, m.lm_head, width, length),
                           extra=2)
    shape = "one 448 px tile" if tiles == 1 else f"{tiles - 1} tiles and a thumbnail (an {2 * size} px square image)"
    return Section(f"InternVL3-8B, {tiles} tile{'s' if tiles > 1 else ''}",
                   f"{n} tokens, {patches // 4} per tile pixel-shuffled from {patches} InternViT patches, {shape}; "
                   "pruned after the projector, per image across its tiles; <img> / </img> kept", rows,
                   source="OpenGVLab/InternVL3-8B-hf's config.json")


def _tiny_config(tok, image: int = 112, max_tiles: int = 2, qk_norm: bool = False):
    """InternVL 3 layout (``internvl``): InternViT tower with [CLS] (8 x 8 patches per ``image`` px tile),
    the pixel shuffle (2 x 2 patches into one token: 16 per tile), an MLP projector, a Qwen2 language model;
    ``InternVLProcessor`` with the PIL ``GotOcr2ImageProcessorPil`` cutting each image into up to
    ``max_tiles`` tiles plus a thumbnail (a 2:1 image: 2 tiles + thumbnail, 48 tokens; a square one: 1 tile),
    every image's tokens between ``<img>`` / ``</img>``. ``qk_norm``: the InternViT-6B towers' q/k RMSNorm."""
    from transformers import InternVLConfig, InternVLVisionConfig

    text = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                  image_size=image, patch_size=PATCH, use_qk_norm=qk_norm,
                                  norm_type="rms_norm" if qk_norm else "layer_norm")
    return InternVLConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
                          image_seq_length=(image // PATCH // 2) ** 2)


def _tiny_init(model: nn.Module, seed: int) -> None:
    emb = model.model.vision_tower.embeddings  # initialised to zeros: a [CLS] and positions worth attending to
    with torch.no_grad():
        emb.cls_token.normal_(std=1.0)
        emb.position_embeddings.normal_(std=0.5)


def _tiny_processor(tok, config, image: int = 112, max_tiles: int = 2, **_):
    from transformers import GotOcr2ImageProcessorPil, InternVLProcessor

    class NoVideoInternVLProcessor(InternVLProcessor):
        """``InternVLProcessor`` without its video processor, which needs torchvision (not installable
        here): ``ProcessorMixin`` checks every sub-processor named in ``__init__``, so this one names none."""

        def __init__(self, image_processor=None, tokenizer=None, image_seq_length=256, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, image_seq_length, chat_template, **kwargs)

    ip = GotOcr2ImageProcessorPil(size={"height": image, "width": image}, crop_to_patches=True, min_patches=1,
                                  max_patches=max_tiles)
    return NoVideoInternVLProcessor(image_processor=ip, tokenizer=tok, image_seq_length=config.image_seq_length)


def internvl_prompt(question: str, n_images: int = 1) -> str:
    """InternVL's chat template: ``<IMG_CONTEXT>`` per image, which the processor expands into its tiles' tokens."""
    return f"<|im_start|>user\n{'<IMG_CONTEXT>' * n_images}\n{question}<|im_end|>\n<|im_start|>assistant\n"


TINY = {"internvl": Tiny("InternVLForConditionalGeneration", _tiny_config, _tiny_processor,
                         specials=("<image>", *QWEN_SPECIALS), init=_tiny_init, prompt=internvl_prompt,
                         named={"start_image_token": "<img>", "end_image_token": "</img>",
                                "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})}
