"""Gemma 3 (``gemma3``): SigLIP tower without [CLS], patches average-pooled into 256 tokens per crop.

``Gemma3Model.get_image_features`` runs the SigLIP tower (its last layer's output) and the
multi-modal projector, which average-pools the ``P x P`` patch grid with a ``P/s x P/s`` window
into ``s x s`` tokens (``mm_tokens_per_image = s^2``: 4 x 4 windows of 64 x 64 patches into 256
tokens at 896 px) before its norm and linear map. Pan-and-scan crops are images of their own to the
model, each with 256 tokens between ``<start_of_image>`` / ``<end_of_image>`` (which are not
placeholders, so they are never dropped).

Alignment: every per-patch signal is pooled with the projector's own ``avg_pool``, so signal ``j``
of a crop describes exactly LM token ``j``. Saliency: SigLIP has no [CLS], so it is the attention
each patch *receives* from all patches, heads averaged (:func:`visprune.ops.received_attention`),
in the scoring layer (default: the last, whose output the projector reads), averaged over the
pooling window like the features themselves: the attention an LM token's patches receive
together, per patch. The [CLS]-row of LLaVA is the attention of one summarising query; with no
such query, the mean over every query is the closest summary, as for Qwen2-VL (checked against the
tower's eager attention maps, ``tests/test_prune_gemma3.py``).

The language model's bidirectional attention over each image's tokens (``token_type_ids``) is
rebuilt by the model from the shortened ``token_type_ids``, so it covers the kept tokens.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..measure import clock
from ..measure.savings import Section, after_connector, build, flops, meta, prefill
from ..prompt import ASSISTANT_MARKERS
from .boxes import View
from .tiny import PATCH, Tiny
from .base import Adapter, Capture, Encoded, encoder_layers, hidden_index_to_layer, assign_signals


class Gemma3Adapter(Adapter):
    model_types = ("gemma3",)
    image_input_keys = ("pixel_values",)
    position_modes = ("compact", "original")
    # the chat template's "<start_of_turn>model\n" decodes to "model\n"
    assistant_markers = (*ASSISTANT_MARKERS, "model\n")

    def check(self, model: nn.Module) -> None:
        base = getattr(model, "model", None)
        if base is None or not all(hasattr(base, a) for a in ("get_image_features", "vision_tower",
                                                                "multi_modal_projector")):
            raise TypeError(f"{type(model).__name__} lacks model.get_image_features / vision_tower / multi_modal_projector")
        encoder_layers(base.vision_tower)

    def picture_views(self, model: nn.Module, processor: Any, picture: Any, config: Any = None) -> tuple[list[View], int] | None:
        """The pooled ``s x s`` tokens over the whole picture, which the processor resizes to the tower's
        square; None with pan-and-scan crops (each crop is then an image of its own to the model)."""
        inputs = processor.image_processor(images=[picture], return_tensors="pt")
        if int(inputs.get("num_crops", torch.zeros(1))[0]):
            return None
        side = int(model.model.multi_modal_projector.tokens_per_side)
        return [View(side, side, (0.0, 0.0, 1.0, 1.0), 0)], side * side

    def vision_depth(self, model: nn.Module) -> int:
        return len(encoder_layers(model.model.vision_tower))

    def encode(self, model: nn.Module, image_inputs: dict, needs: frozenset[str], config: Any) -> Encoded:
        base = model.model
        n = self.vision_depth(model)
        sal_layer = hidden_index_to_layer(config.layer, n) if config.layer is not None else n - 1
        capture = Capture(base.vision_tower, needs, sal_layer, hidden_index_to_layer(config.text_layer, n))
        with capture.active():
            t0 = clock.now()
            out = base.get_image_features(pixel_values=image_inputs["pixel_values"], return_dict=True)
            model_seconds = clock.now() - t0
        features = list(out.pooler_output)  # one [s*s, D] per crop
        pooled = self._pool(base.multi_modal_projector, capture.per_crop_signals(has_cls=False))
        side = int(base.multi_modal_projector.tokens_per_side)
        enc = Encoded(features=features, protected=[torch.zeros(len(f), dtype=torch.bool, device=f.device)
                                                    for f in features],
                      image_keys=capture.image_keys([1] * len(features)), grids=[(side, side)] * len(features))
        enc.model_seconds = model_seconds
        assign_signals(enc, pooled, needs, base.vision_tower.config.hidden_size)  # channel 0: the [CLS] marker, zeros
        return enc

    @staticmethod
    def _pool(projector: nn.Module, signals: torch.Tensor) -> torch.Tensor:
        """``[crops, P*P, C]`` per-patch signals pooled as the projector pools patches: ``[crops, s*s, C]``."""
        crops, patches, channels = signals.shape
        grid = signals.transpose(1, 2).reshape(crops, channels, projector.patches_per_image, projector.patches_per_image)
        return projector.avg_pool(grid).flatten(2).transpose(1, 2)

    def apply(self, model: nn.Module, sel: Any, kwargs: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              image_inputs: dict, side: str | None) -> tuple[dict, AbstractContextManager]:
        """The default rebuild (``token_type_ids`` shortened with ``input_ids``); Gemma 3 reads
        ``mm_encoder_outputs`` as one tensor, so the ragged kept features go as one ``[1, total, D]`` run."""
        kwargs, ctx = super().apply(model, sel, kwargs, input_ids, attention_mask, image_inputs, side)
        kept = torch.cat(sel.kept_features)[None]
        kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=kept)}
        return kwargs, ctx


# --- savings at published size (docs/savings.md, visprune.measure.savings) ---


def savings(tiny: bool) -> list[Section]:
    """Gemma-3-4B and 12B (google/gemma-3-4b-it, google/gemma-3-12b-it) on one 896x896 image (no pan and scan):
    SigLIP-so400m, 4x4 average pool into 256 tokens, Gemma 3 language models (sliding-window and global layers)."""
    return [_gemma3(tiny, "Gemma-3-4B", 2560, 10240, 34, 8, 4), _gemma3(tiny, "Gemma-3-12B", 3840, 15360, 48, 16, 8)]


def _gemma3(tiny: bool, name: str, width: int, ffn: int, layers: int, heads: int, kv: int) -> Section:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    if tiny:
        text = Gemma3TextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=64)
        vis = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 image_size=112, patch_size=14)
        tokens = 16
    else:
        text = Gemma3TextConfig(vocab_size=262208, hidden_size=width, intermediate_size=ffn, num_hidden_layers=layers,
                                num_attention_heads=heads, num_key_value_heads=kv, head_dim=256, sliding_window=1024,
                                query_pre_attn_scalar=256)
        vis = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                 image_size=896, patch_size=14, vision_use_head=False)
        tokens = 256
    cfg = Gemma3Config(text_config=text, vision_config=vis, mm_tokens_per_image=tokens,
                       image_token_id=text.vocab_size - 1)
    m = build(Gemma3ForConditionalGeneration, cfg)
    patches = (vis.image_size // vis.patch_size) ** 2
    vision = flops(m.model.vision_tower, meta(1, 3, vis.image_size, vis.image_size))
    connector = flops(m.model.multi_modal_projector, meta(1, patches, vis.hidden_size))
    rows = after_connector(tokens, vision, connector,
                           lambda length: prefill(m.model.language_model, m.lm_head, text.hidden_size, length), extra=2)
    return Section(name, f"{tokens} tokens pooled from {patches} SigLIP patches, pruned after the projector; "
                   "<start_of_image> / <end_of_image> kept", rows,
                   source=f"google/{name.lower()}-it's config.json")


def _tiny_config(tok, image: int = 112, tokens: int = 16):
    """Gemma 3 layout (``gemma3``): SigLIP tower without [CLS] (8 x 8 patches at 112 px), the projector's
    average pool into ``tokens`` (4 x 4: 2 x 2 windows), a Gemma 3 language model (sliding-window layers),
    ``Gemma3Processor`` with ``<start_of_image>`` / ``<end_of_image>`` around each image's tokens."""
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    ids = {name: tok.convert_tokens_to_ids(t) for name, t in
           (("image_token_id", "<image>"), ("boi_token_id", "<start_of_image>"), ("eoi_token_id", "<end_of_image>"))}
    text = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=64,
                            max_position_embeddings=512, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=image, patch_size=PATCH)
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens, **ids)


def _tiny_processor(tok, config, image: int = 112, tokens: int = 16, **_):
    from transformers import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    ip = Gemma3ImageProcessorPil(size={"height": image, "width": image})
    return Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=tokens)


def gemma3_prompt(question: str, n_images: int = 1) -> str:
    return "user " + "<start_of_image> " * n_images + question + " model"


TINY = {"gemma3": Tiny("Gemma3ForConditionalGeneration", _tiny_config, _tiny_processor, prompt=gemma3_prompt,
                       named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image>"})}
