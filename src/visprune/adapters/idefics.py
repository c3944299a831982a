"""IDEFICS (``idefics``, the open Flamingo reproduction): prune ViT patches before the resampler.

IDEFICS feeds images to its language model through gated cross-attention layers, not through
placeholder tokens: the prompt holds one ``<image>`` token per image, and the cross-attention
reads either the perceiver resampler's latents (``use_resampler=True``, IDEFICS-9B / 80B: 64
latents per image) or the ViT patches themselves. visprune prunes the ViT patches ([CLS]
protected) where the model reads them:

- **with a resampler**: the resampler takes no padding mask, so ragged budgets mean one run per
  image on exactly its kept patches. Where ``generate`` reuses the latents (transformers < 5.24)
  they are computed so and handed over as ``perceiver_embeddings``; where it resamples at every
  step (5.24 on) the kept patches are handed over, right-padded, as ``image_encoder_embeddings``,
  and while the call runs the ``perceiver_resampler`` instance runs each image on its kept
  patches alone. The language model
  still cross-attends to 64 latents per image: pruning saves resampler work only (see
  ``docs/savings.md``).
- **without a resampler**: the kept patches are right-padded per image and handed over as
  ``image_encoder_embeddings``; a forward pre-hook on each gated cross-attention layer adds the
  padding to its ``image_attention_mask``, so no text token attends to a padding slot. This
  shortens every cross-attention's keys and values.

The prompt is left as it is. Scorers: ``cls`` (the [CLS] attention of the last ViT layer, whose
output the resampler reads), ``visionzip``, ``vispruner``, ``pool``, ``random``, ``divprune``,
``text`` / ``atp`` / ``cdpruner`` with a CLIP ``text_encoder`` sharing the ViT's space; not ``lmtext``
(ViT patches are not in the language model's embedding space).

Modifications against the stock model (transformers 5.23-5.25 ``modeling_idefics.py``
``IdeficsModel.forward``): none to the code; the vision tower runs once (in ``encode``), the
pruned call gets ``perceiver_embeddings`` / ``image_encoder_embeddings`` instead of ``pixel_values``
(inputs the stock ``forward`` and ``prepare_inputs_for_generation`` accept), and the resampler's per-image
``forward`` or the cross-attention pre-hooks live only while the call runs.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from ..measure import clock
from ..measure.savings import KEEPS, META, TEXT_TOKENS, Row, Section, build, flops, kept, meta
from .. import ops
from ..compat import idefics_generate_reuses_latents, idefics_perceiver_embeddings
from ..scoring.context import QUESTION_EMBEDS
from ..callscope import overriding, this_thread
from .boxes import View
from .tiny import IMAGE, PATCH, Tiny
from .base import Adapter, Capture, Encoded, hidden_index_to_layer, assign_signals


class IdeficsAdapter(Adapter):
    model_types = ("idefics",)
    image_input_keys = ("pixel_values", "image_attention_mask", "interpolate_pos_encoding")
    unsupported = {
        QUESTION_EMBEDS: "IDEFICS is pruned before its resampler, on ViT patches, which are not in the language "
        "model's embedding space: use scorer='cls', 'visionzip', 'vispruner', 'pool', 'random' or 'divprune', or "
        "'text' / 'atp' / 'cdpruner' with a CLIP text_encoder that shares the ViT's space"
    }

    def image_token_id(self, model: nn.Module) -> int:
        return int(getattr(model.config, "image_token_id", None) or -1)  # not used to place features here

    def check(self, model: nn.Module) -> None:
        base = getattr(model, "model", None)
        if base is None or not hasattr(base, "vision_model") or not hasattr(base, "gated_cross_attn_layers"):
            raise TypeError(f"{type(model).__name__} lacks model.vision_model / model.gated_cross_attn_layers")

    def vision_depth(self, model: nn.Module) -> int:
        return len(model.model.vision_model.encoder.layers)

    def picture_views(self, model: nn.Module, processor: Any, picture: Any, config: Any = None) -> tuple[list[View], int]:
        """What is pruned here, the ViT's tokens: its [CLS], then its patch grid over the whole picture,
        which the processor resizes to the tower's square."""
        vis = model.config.vision_config
        side = vis.image_size // vis.patch_size
        return [View(side, side, (0.0, 0.0, 1.0, 1.0), 1)], 1 + side * side

    def encode(self, model: nn.Module, image_inputs: dict, needs: frozenset[str], config: Any) -> Encoded:
        tower = model.model.vision_model
        n_layers = len(tower.encoder.layers)
        sal = hidden_index_to_layer(config.layer if config.layer is not None else -1, n_layers)
        capture = Capture(tower, needs, sal, hidden_index_to_layer(config.text_layer, n_layers))
        pixels = image_inputs["pixel_values"]
        rows, per_row = pixels.shape[:2]
        flat = pixels.reshape(rows * per_row, *pixels.shape[2:]).to(dtype=model.dtype)
        with capture.active():
            t0 = clock.now()
            # as IdeficsModel.forward computes it: the resampler / cross-attention read last_hidden_state
            hidden = tower(pixel_values=flat, interpolate_pos_encoding=image_inputs.get("interpolate_pos_encoding", False))
            model_seconds = clock.now() - t0
        features = list(hidden.last_hidden_state)
        signals = capture.per_crop_signals(has_cls=True)  # [images, T, C]: marker, saliency, hidden, keys
        enc = Encoded(features=features, protected=[s[:, 0] > 0.5 for s in signals],
                      image_keys=capture.image_keys([1] * len(features)))
        enc.model_seconds = model_seconds
        enc.image_rows = [r for r in range(rows) for _ in range(per_row)]
        enc.extras["layout"] = (rows, per_row)
        assign_signals(enc, signals, needs, tower.config.hidden_size)
        n = features[0].shape[0] - 1
        side = math.isqrt(n)
        enc.grids = [(side, side) if side * side == n else None for _ in features]
        return enc

    def apply(self, model, sel, kwargs, input_ids, attention_mask, image_inputs, side):
        rows, per_row = sel.encoded.extras["layout"]
        for name in ("image_attention_mask", "interpolate_pos_encoding"):
            if name in image_inputs:
                kwargs[name] = image_inputs[name]
        kwargs.pop("pixel_values", None)
        base = model.model
        kept = list(sel.kept_features)
        if base.config.use_resampler and idefics_generate_reuses_latents():
            # The resampler has no padding mask: one run per image on exactly its kept patches.
            latents = torch.cat([base.perceiver_resampler(f[None]) for f in kept])
            kwargs["perceiver_embeddings"] = idefics_perceiver_embeddings(latents.reshape(rows, per_row, *latents.shape[1:]))
            return kwargs, nullcontext()
        patches, valid = ops.pad_ragged(kept)
        kwargs["image_encoder_embeddings"] = patches.reshape(rows, per_row, *patches.shape[1:])
        if base.config.use_resampler:
            return kwargs, _resample_kept(base.perceiver_resampler, valid.reshape(rows, -1))
        return kwargs, _masked_padding(base, valid.reshape(rows, -1))


def _expanded(valid: torch.Tensor, batch: int) -> torch.Tensor:
    """``valid`` (``[rows, images * slots]``) for a batch that beam search / ``num_return_sequences``
    expanded row by row."""
    return valid.repeat_interleave(batch // valid.shape[0], dim=0) if batch != valid.shape[0] else valid


@contextmanager
def _resample_kept(resampler: nn.Module, valid: torch.Tensor):
    """The resampler's ``forward``, for the duration of one call, runs on each image's kept patches alone.

    The stock model hands the resampler the padded kept patches (``[images, slots, D]``); the
    resampler has no padding mask, so each image runs on exactly its kept patches, one run per
    image. Wrapping the resampler, rather than passing ``perceiver_embeddings``, works the same
    on every transformers version: 5.23 resamples once and reuses the latents while decoding,
    5.24 reruns the resampler on the stored patches at every step (and reads ``perceiver_embeddings``
    as ``[images, latents, D]`` where 5.23 read ``[rows, images, latents, D]``). The instance
    attribute is removed when the call ends, restoring the class's ``forward``.
    """
    stock = type(resampler).forward

    def kept_only(patches: torch.Tensor) -> torch.Tensor:
        slots = patches.shape[1]
        mask = _expanded(valid, patches.shape[0] * slots // valid.shape[1]).reshape(-1, slots).to(patches.device)
        return torch.cat([stock(resampler, x[m][None]) for x, m in zip(patches, mask)])

    with overriding(resampler, "forward", kept_only):
        yield


@contextmanager
def _masked_padding(base: nn.Module, valid: torch.Tensor):
    """Pre-hooks that hide the padding slots of ragged kept patches from every gated cross-attention."""

    def hide_padding(_module, args, kwargs):
        mask = kwargs["image_attention_mask"]  # [B', 1, T, images * slots], additive
        pad = ~_expanded(valid, mask.shape[0]).to(mask.device)
        return args, dict(kwargs, image_attention_mask=mask.masked_fill(pad[:, None, None, :], torch.finfo(mask.dtype).min))

    with ExitStack() as stack:
        for layer in base.gated_cross_attn_layers:
            handle = layer.register_forward_pre_hook(this_thread(hide_padding), with_kwargs=True)
            stack.callback(handle.remove)
        yield


# --- savings at published size (docs/savings.md, visprune.measure.savings) ---


def savings(tiny: bool) -> list[Section]:
    """IDEFICS-9B (HuggingFaceM4/idefics-9b): CLIP ViT-H/14, perceiver resampler (64 latents), LLaMA-7B + 8 gated
    xattn; pruned before the resampler, so the language model's input does not change."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text

    if tiny:
        cfg = IdeficsConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            vocab_size=1000, additional_vocab_size=2, cross_layer_interval=1, use_resampler=True,
                            vision_config=dict(embed_dim=32, image_size=56, intermediate_size=64, patch_size=14,
                                               num_attention_heads=4, num_hidden_layers=2),
                            perceiver_config=dict(use_resampler=True, resampler_n_latents=8, resampler_depth=2,
                                                  resampler_n_heads=4, resampler_head_dim=8))
    else:
        cfg = IdeficsConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                            vocab_size=32000, additional_vocab_size=2, cross_layer_interval=4, use_resampler=True,
                            qk_layer_norms=False, max_position_embeddings=2048,
                            vision_config=dict(embed_dim=1280, image_size=224, intermediate_size=5120, patch_size=14,
                                               num_attention_heads=16, num_hidden_layers=32),
                            perceiver_config=dict(use_resampler=True, resampler_n_latents=64, resampler_depth=6,
                                                  resampler_n_heads=16, resampler_head_dim=96))
    # IDEFICS always builds a padding mask, which the SDPA mask code inspects (impossible on meta):
    # count with eager attention, whose matmuls torch counts exactly as the SDPA formula does.
    cfg._attn_implementation = "eager"
    m = build(IdeficsForVisionText2Text, cfg)
    vc = cfg.vision_config
    patches = (vc.image_size // vc.patch_size) ** 2
    latents = cfg.perceiver_config.resampler_n_latents
    vision = flops(m.model.vision_model, meta(1, 3, vc.image_size, vc.image_size))
    length = TEXT_TOKENS
    lm = flops(m.model, inputs_embeds=meta(1, length, cfg.hidden_size),
               perceiver_embeddings=idefics_perceiver_embeddings(meta(1, 1, latents, vc.embed_dim)),
               image_attention_mask=torch.ones(1, length, 1, device=META)) + flops(m.lm_head, meta(1, 1, cfg.hidden_size))
    rows = []
    for keep in KEEPS:
        n = kept(patches, keep) + 1  # [CLS] protected
        rows.append(Row(keep, n, latents, vision, flops(m.model.perceiver_resampler, meta(1, n, vc.embed_dim)), lm))
    return [Section("IDEFICS-9B", f"{patches} ViT patches + [CLS] (protected), pruned before the perceiver resampler; "
                    f"the language model cross-attends to {latents} latents whatever is kept", rows,
                    source="HuggingFaceM4/idefics-9b's config.json")]


def _tiny_config(tok, resampler: bool = True, latents: int = 4):
    """IDEFICS layout (``idefics``, open Flamingo): CLIP-style ViT with [CLS], perceiver resampler
    (``resampler=False``: the language model cross-attends to the patches), Llama with gated
    cross-attention. The gates start open (``alpha_initializer="ones"``; transformers' default of zeros
    would make the images invisible to the language model)."""
    from transformers import IdeficsConfig

    return IdeficsConfig(
        vocab_size=len(tok), additional_vocab_size=0, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, cross_layer_interval=1, use_resampler=resampler, alpha_initializer="ones",
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, freeze_text_layers=False, freeze_vision_layers=False,
        vision_config=dict(embed_dim=32, image_size=IMAGE, intermediate_size=64, patch_size=PATCH,
                           num_attention_heads=4, num_hidden_layers=3),
        perceiver_config=dict(use_resampler=resampler, resampler_n_latents=latents, resampler_depth=2,
                              resampler_n_heads=4, resampler_head_dim=8),
    )


def _tiny_processor(tok, config, **_):
    from transformers import IdeficsProcessor
    from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

    return IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=IMAGE), tokenizer=tok, image_size=IMAGE)


def idefics_prompts(images, questions):
    """IDEFICS prompts: one list per sample, ``User:``, the image, the question, ``Assistant:``."""
    return [["USER:", img, f"{q} ASSISTANT:"] for img, q in zip(images, questions)]


TINY = {"idefics": Tiny("IdeficsForVisionText2Text", _tiny_config, _tiny_processor,
                        specials=("<image>", "<fake_token_around_image>"))}
