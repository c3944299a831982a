"""What an adapter does: run the vision side once, capture what scorers need, align it per token."""

from __future__ import annotations

import zlib
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from transformers.modeling_outputs import BaseModelOutputWithPooling

from .. import ops
from .boxes import TokenBoxes, View
from ..callscope import this_thread
from ..batching import PromptLayout, RowPlan, keep_positions, keep_positions_by_kind
from ..errors import UsageError
from ..scoring.context import IMAGE_KEY, KEYS, LAST_QK, PATCH_HIDDEN, SALIENCY, TOWER, TowerStates
from ..prompt import ASSISTANT_MARKERS, USER_MARKERS


# Per-token tensors that must lose the same positions as input_ids, and their padding values.
PER_TOKEN = {"attention_mask": 0, "labels": -100, "token_type_ids": 0, "mm_token_type_ids": 0}


@dataclass
class Encoded:
    """The vision side of one call, one entry per image, aligned with the tokens the LM receives.

    ``features[i]`` is ``[N_i, D]``; ``protected[i]`` is ``[N_i]`` bool; ``saliency[i]`` is ``[N_i]``;
    ``patch_hidden[i]`` is ``[N_i, Dv]``; ``image_keys[i]`` is an int.
    """

    features: list[torch.Tensor]
    protected: list[torch.Tensor]
    saliency: list[torch.Tensor] | None = None
    patch_hidden: list[torch.Tensor] | None = None
    image_keys: list[int] | None = None
    keys: list[torch.Tensor] | None = None
    grids: list[tuple[int, int]] | None = None
    #: the tower's hidden states before the projector and the projector (``TOWER`` signal)
    tower: TowerStates | None = None
    #: ``crops[i]`` is ``[N_i]`` long: the crop of image ``i`` each token comes from (0 the base
    #: image, 1.. its any-resolution crops in the model's order, -1 a token of no crop, such as a
    #: row-end newline), for selections made crop by crop (CDPruner, VisPruner on LLaVA-NeXT);
    #: None where an adapter does not tell crops apart
    crops: list[torch.Tensor] | None = None
    model_seconds: float = 0.0  # time spent in the model's own image-feature code
    extras: dict = field(default_factory=dict)
    #: batch row of each image, for adapters whose prompts hold fewer placeholders than features
    #: (BLIP-2's ViT cut, IDEFICS); ``None``: found from the placeholder tokens
    image_rows: list[int] | None = None
    #: the kind of each entry (a key of :meth:`Adapter.visual_tokens`: ``"image"``, ``"video"``), for
    #: adapters that prune videos too; entries of one kind are contiguous, kinds in that table's
    #: order (all images, then all videos); ``None``: every entry is an image
    modalities: list[str] | None = None
    #: ``(t, h, w)`` of each entry's tokens when they are a stack of ``t`` temporal groups of an ``h x w``
    #: grid in ``(t, h, w)`` row-major order (Qwen-VL videos: after the 2x2 merger, one group per frame
    #: pair; LLaVA-OneVision: one group per frame after its 2x2 pooling, then one newline token outside the
    #: grid), for the temporal stage (``PruneConfig.temporal``); ``None`` where an adapter does not say
    thw: list[tuple[int, int, int]] | None = None


class Adapter:
    """Architecture knowledge for one family of ``transformers`` VLMs.

    An adapter names the keyword arguments that carry images, runs the model's own image-feature
    code once with hooks that capture the scoring signals, and hands back features and signals
    aligned token by token. It never changes the model; ``visprune.transform`` does the patching.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    #: keyword arguments of forward/generate that are consumed by image encoding
    image_input_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)
    #: keyword arguments that carry videos, pruned like images (one entry per video); empty: videos refused
    video_input_keys: ClassVar[tuple[str, ...]] = ()
    #: scoring signals this architecture cannot provide (checked by ``prune_``)
    unsupported: ClassVar[dict[str, str]] = {}
    #: the tower-space path (``TOWER`` / ``LAST_QK`` signals: hidden states before the projector,
    #: the model's own projector) is implemented for this architecture
    tower_space: ClassVar[bool] = False
    #: the tower-space path crop by crop (``TowerStates.crops``), for scorers that take it
    #: (``Scorer.tower_crops``: VisionZip on LLaVA-NeXT, as its official any-resolution code)
    tower_crops: ClassVar[bool] = False
    #: values of ``PruneConfig.positions`` this architecture honours, its own way first
    position_modes: ClassVar[tuple[str, ...]] = ("compact",)
    user_markers: ClassVar[tuple[str, ...]] = USER_MARKERS
    #: the processor writes the image placeholders into every prompt itself (BLIP-2's prepends its
    #: query tokens), so a prompt built without a chat template names no image
    #: (:func:`visprune.evaluation.models.prompt_text`)
    processor_places_images: ClassVar[bool] = False
    assistant_markers: ClassVar[tuple[str, ...]] = ASSISTANT_MARKERS
    #: the language model's rotary positions have several axes (Qwen's M-RoPE: t, h, w): they have no
    #: contiguous renumbering, so in-LLM pruning always keeps them original (PyramidDrop's "compact" included)
    multi_axis_positions: ClassVar[bool] = False
    #: each image's candidate tokens form one patch grid (``Encoded.grids``); False for packed
    #: any-resolution crops, which scorers needing a grid (``pool``) are refused on (at ``prune_`` time; per
    #: call with images where the adapter prunes videos, whose frames are grids: :meth:`check_call`)
    one_grid: ClassVar[bool] = True

    def picture_views(self, model: nn.Module, processor: Any, picture: Any, config: Any = None) -> tuple[list[View], int] | None:
        """The visual tokens of one picture (a PIL image) that a call pruned with ``config`` (None: the
        default settings) selects among, as the processor and model lay them out: the token grids
        (:class:`~visprune.adapters.boxes.View`) and the image's token count, tokens outside every view
        being structure (newlines, [CLS]); None where tokens are not laid over the picture (BLIP-2's
        queries). Default: None."""
        return None

    def token_boxes(self, model: nn.Module, processor: Any, picture: Any, config: Any = None) -> TokenBoxes | None:
        """Where each visual token of ``picture`` lies in it (boxes normalised to the picture, NaN for
        structure tokens), in the order of the image's kept indices (``last_kept``) under ``config``; None
        where the adapter cannot say (:meth:`picture_views`). For the overlays and the viewer."""
        laid = self.picture_views(model, processor, picture, config)
        return None if laid is None else TokenBoxes.from_views(*laid)

    def has_images(self, kwargs: dict) -> bool:
        pv = kwargs.get("pixel_values")
        return pv is not None and pv.numel() > 0

    def image_token_id(self, model: nn.Module) -> int:
        return int(model.config.image_token_id)

    def visual_tokens(self, model: nn.Module) -> dict[str, int]:
        """The placeholder id of each kind of visual input the model scatters on its own, in the order of
        ``Encoded`` entries (``mm_encoder_outputs`` keys); default: images only."""
        return {"image": self.image_token_id(model)}

    def check_inputs(self, model: nn.Module, kwargs: dict) -> None:
        """Raise ``UsageError`` before any model runs if the call's visual inputs cannot be pruned here
        (called for every pruned call). Default: videos are refused, rather than run unpruned."""
        if not self.video_input_keys and kwargs.get("pixel_values_videos") is not None:
            raise UsageError(
                f"visprune does not prune video inputs (pixel_values_videos) on {model.config.model_type}; videos "
                "are pruned on the Qwen-VL family (qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_5), llava_onevision and "
                "llava_next_video. Pass the frames as "
                "images, or call the unpruned model (visprune.unprune_)"
            )

    def check_call(self, model: nn.Module, kwargs: dict, config: Any, scorer: Any) -> None:
        """Raise ``UsageError`` before any model runs if ``scorer`` cannot prune this call's inputs (called for
        every pruned call, after :meth:`check_inputs`). A scorer that needs one patch grid per image
        (``pool``) runs where images are packed crops (``one_grid`` False) only if the adapter prunes videos,
        whose temporal groups are grids: a call with images is then refused."""
        if getattr(scorer, "needs_grid", False) and not self.one_grid and self.has_image_pixels(kwargs):
            raise UsageError(f"scorer {config.scorer_name!r} needs one patch grid per image; "
                             f"{model.config.model_type} packs several crops per image, so it pools only videos "
                             "(each frame's grid) here. Pick another scorer for images")

    def has_image_pixels(self, kwargs: dict) -> bool:
        """The call carries images (not only videos)."""
        pv = kwargs.get(self.image_input_keys[0])
        return pv is not None and pv.numel() > 0

    def check(self, model: nn.Module) -> None:
        """Raise a clear error if this model instance cannot be served (called by ``prune_``)."""

    def check_config(self, model: nn.Module, config: Any, scorer: Any) -> None:
        """Raise ``TypeError`` if ``scorer`` (already set up) cannot run here (called by ``prune_``)."""
        if getattr(scorer, "needs_grid", False) and not self.one_grid and not self.video_input_keys:
            raise TypeError(f"scorer {config.scorer_name!r} needs one patch grid per image; "
                            f"{model.config.model_type} packs several crops or tiles per image. "
                            "Pick another scorer")
        for signal in scorer.needs:
            if signal in self.unsupported:
                raise TypeError(
                    f"scorer {config.scorer_name!r} cannot run on {model.config.model_type}: {self.unsupported[signal]}"
                )

    def check_tower(self, model: nn.Module, config: Any, scorer: Any) -> None:
        """Raise ``TypeError`` if ``scorer`` merges in the tower's hidden space (``TOWER`` / ``LAST_QK``
        signals) and this model cannot serve it (called by ``prune_``, after :meth:`check_config`)."""
        if not scorer.needs & {TOWER, LAST_QK}:
            return
        if not self.tower_space and not (self.tower_crops and getattr(scorer, "tower_crops", False)):
            variant = getattr(scorer, "projected_variant", None)
            hint = (f"; its post-projector variant {variant} runs here" if variant
                    else "; it has no post-projector variant")
            raise TypeError(
                f"scorer {config.scorer_name!r} merges in the vision tower's hidden space (before the projector), "
                f"which visprune implements for single-crop LLaVA (model type 'llava') and, for VisionZip, "
                f"LLaVA-NeXT ('llava_next'), not {model.config.model_type}{hint}"
            )

    def vision_depth(self, model: nn.Module) -> int | None:
        """How many layers the vision tower has (what ``layer`` / ``text_layer`` index into); None: unknown."""
        return None

    def check_layers(self, model: nn.Module, config: Any) -> None:
        """Raise ``ValueError`` if ``config.layer`` / ``config.text_layer`` are outside the vision tower
        (called by ``prune_``, so a bad index fails before any model runs)."""
        depth = self.vision_depth(model)
        if depth is None:
            return
        for name in ("layer", "text_layer"):
            index = getattr(config, name)
            if index is not None:
                try:
                    hidden_index_to_layer(index, depth)
                except ValueError:
                    raise ValueError(f"{name}={index} is out of range: the vision tower of this "
                                     f"{model.config.model_type} has {depth} layers (valid: 1..{depth} or "
                                     f"-{depth}..-1)") from None

    def check_positions(self, model: nn.Module, config: Any, scorer: Any) -> None:
        """Raise ``TypeError`` if ``config.positions`` cannot be honoured (called by ``prune_``).
        In-LLM scorers (FastV) keep every position by construction."""
        if config.positions == "original" and getattr(scorer, "own_order", False):
            raise TypeError(
                f"positions='original' cannot run with scorer {config.scorer_name!r}: it sends the language model "
                "tokens that have no single original position ([CLS], merged tokens appended after the kept ones); "
                "use positions='compact' (the default)"
            )
        modes = ("original",) if getattr(scorer, "in_llm", False) else self.position_modes
        if config.positions is not None and config.positions not in modes:
            raise TypeError(
                f"positions={config.positions!r} cannot run with scorer {config.scorer_name!r} on "
                f"{model.config.model_type}, which supports: {', '.join(modes)}"
            )

    def encode(self, model: nn.Module, image_inputs: dict, needs: frozenset[str], config: Any) -> Encoded:
        raise NotImplementedError

    def per_image(self, model: nn.Module, enc: Encoded, layout: PromptLayout) -> Encoded:
        """What :meth:`encode` returned, regrouped into the prompt's images (called by the pipeline
        right after it), for architectures whose image inputs do not say which crops form one image
        and whose prompt does (InternVL: one placeholder run per image, whatever its tiles). Default:
        as it is."""
        return enc

    def apply(
        self,
        model: nn.Module,
        sel: Any,
        kwargs: dict,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_inputs: dict,
        side: str | None,
    ) -> tuple[dict, AbstractContextManager]:
        """Turn a selection into the keyword arguments of the original call, and a context for it.

        Default (models that take ``mm_encoder_outputs``): drop the placeholders of dropped tokens
        from ``input_ids`` and every per-token tensor, re-pad on ``side`` (the input's own side
        for ``forward``, left for ``generate``), and hand the kept features over as
        ``mm_encoder_outputs`` so the vision tower does not run twice. With
        ``sel.original_positions``, the kept tokens also get the ``position_ids`` the unpruned call
        would have given them (``generate``: from the attention mask, as ``generate`` numbers them;
        ``forward``: ``0 .. L-1``, the language model's default), and ``generate`` extends them.
        Architectures that need hooks during the call (BLIP-2, IDEFICS) override this and return a
        context manager.
        """
        for_generate = side is not None  # generate passes "left", forward None
        layout = sel.layout  # the prompt on the host: no read-back for the checks and the new width
        kinds = self.visual_tokens(model)
        if sel.encoded.modalities is None:
            keep = keep_positions(input_ids, attention_mask, self.image_token_id(model), sel.image_token_keep(),
                                  sum(layout.placeholders))
        else:  # each kind scattered on its own, in its own placeholder order
            keep = keep_positions_by_kind(
                input_ids, attention_mask, {tid: sel.token_keep(kind) for kind, tid in kinds.items()},
                {tid: sum(layout.placeholders_of(tid)) for tid in kinds.values()},
            )
        side = side or layout.padding_side()
        plan = RowPlan(keep, side, layout.pruned_width(sel.image_rows, sel.sent))
        new_mask = plan.gather(attention_mask, 0)
        extra = self.extra_inputs(model, image_inputs, kwargs, input_ids, attention_mask, keep, new_mask, side)
        kwargs["input_ids"] = plan.gather(input_ids, _pad_id(model, input_ids, attention_mask))
        kwargs["attention_mask"] = new_mask
        for name, pad in PER_TOKEN.items():
            value = kwargs.get(name)
            if name != "attention_mask" and isinstance(value, torch.Tensor) and value.shape[:2] == input_ids.shape:
                kwargs[name] = plan.gather(value, pad)
        kwargs.update(extra)
        if sel.original_positions and "position_ids" not in extra:
            kwargs["position_ids"] = plan.gather(unpruned_positions(attention_mask, for_generate), 0)
        kwargs["mm_encoder_outputs"] = {kind: BaseModelOutputWithPooling(pooler_output=feats)
                                        for kind, feats in sel.kept_features_by_kind().items()}
        return kwargs, nullcontext()

    def extra_inputs(
        self,
        model: nn.Module,
        image_inputs: dict,
        kwargs: dict,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        keep: torch.Tensor,
        new_attention_mask: torch.Tensor,
        side: str,
    ) -> dict:
        """Inputs besides the shortened token rows that the model needs (e.g. explicit positions).

        ``keep`` is the ``[B, L]`` mask of surviving positions of the original rows.
        """
        return {}


def unpruned_positions(attention_mask: torch.Tensor, for_generate: bool) -> torch.Tensor:
    """``[B, L]`` position ids the language model gives the unpruned prompt: ``generate`` counts
    the attended tokens (padding at 0), ``forward`` numbers every slot ``0 .. L-1``."""
    if for_generate:
        return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    return torch.arange(attention_mask.shape[1], device=attention_mask.device).expand(attention_mask.shape)


def _pad_id(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The id the prompt pads with (its first padded token), else the configured pad id, else 0:
    a 0-dim tensor on the prompt's device, so nothing is read back to the host."""
    fallback = 0
    for cfg in (getattr(model, "generation_config", None), getattr(model.config, "text_config", None), model.config):
        pid = getattr(cfg, "pad_token_id", None)
        if isinstance(pid, int):
            fallback = pid
            break
    default = torch.full((), fallback, dtype=input_ids.dtype, device=input_ids.device)  # a fill, not a copy
    pads = (mask == 0).flatten()
    if not pads.numel():
        return default
    first = input_ids.flatten().index_select(0, pads.to(torch.uint8).argmax().view(1))[0]
    return torch.where(pads.any(), first, default)


def assign_signals(enc: Encoded, per_image, needs: frozenset[str], hidden_width: int, first: int = 1) -> None:
    """Put each image's signal channels into ``enc``, in the order :meth:`Capture.per_crop_signals` writes
    them after its ``first`` marker channel(s): saliency, the patch hidden states (``hidden_width``
    channels), the keys. ``per_image``: one ``[N_i, C]`` per image (a list, or a ``[I, N, C]`` tensor)."""
    col = first
    if SALIENCY in needs:
        enc.saliency = [s[:, col] for s in per_image]
        col += 1
    if PATCH_HIDDEN in needs:
        enc.patch_hidden = [s[:, col : col + hidden_width] for s in per_image]
        col += hidden_width
    if KEYS in needs:
        enc.keys = [s[:, col:] for s in per_image]


def encoder_layers(tower: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a vision tower (CLIP / SigLIP, with or without a wrapper; InternViT's ``encoder.layer``)."""
    for path in ("encoder.layers", "vision_model.encoder.layers", "encoder.layer"):
        obj = tower
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise TypeError(f"cannot find the encoder layers of vision tower {type(tower).__name__}")


def hidden_index_to_layer(index: int, num_layers: int) -> int:
    """Map a ``hidden_states`` index (transformers' convention) to the layer that produced it."""
    layer = num_layers + index if index < 0 else index - 1
    if not 0 <= layer < num_layers:
        raise ValueError(f"layer {index} is out of range for a vision tower with {num_layers} layers")
    return layer


def layer_attention(layer: nn.Module) -> nn.Module:
    """A vision block's self-attention: ``self_attn`` (CLIP, SigLIP) or ``attention`` (InternViT)."""
    attn = getattr(layer, "self_attn", None)
    return attn if attn is not None else layer.attention


def qk_modules(attn: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The modules whose outputs are the queries and keys the attention multiplies, ``[B, T, H*hd]``:
    ``q_norm`` / ``k_norm`` where the tower normalises them after the projections (InternViT; an
    ``Identity`` there without QK-norm), else ``q_proj`` / ``k_proj``."""
    if hasattr(attn, "q_norm") and hasattr(attn, "k_norm"):
        return attn.q_norm, attn.k_norm
    return attn.q_proj, attn.k_proj


def tower_has_cls(tower: nn.Module) -> bool:
    emb = getattr(tower, "embeddings", None) or getattr(getattr(tower, "vision_model", None), "embeddings", None)
    return emb is not None and hasattr(emb, "class_embedding")


def pixel_key(pixels: torch.Tensor) -> int:
    """A stable hash of an image's pixel tensor (batch-independent, for seeded randomness)."""
    return zlib.crc32(pixels.detach().float().cpu().contiguous().numpy().tobytes())


class Capture:
    """Forward hooks on one vision tower that record the scoring signals of a single call."""

    def __init__(self, tower: nn.Module, needs: frozenset[str], saliency_layer: int, text_layer: int,
                 feature_layer: int | None = None):
        self.tower, self.needs = tower, needs
        self.layers = encoder_layers(tower)
        self.saliency_layer, self.text_layer, self.feature_layer = saliency_layer, text_layer, feature_layer
        self.values: dict[str, torch.Tensor] = {}

    def _store(self, name: str):
        def hook(_module, _inputs, output):
            self.values[name] = output[0] if isinstance(output, tuple) else output

        return hook

    @contextmanager
    def active(self):
        handles = []
        try:
            q_mod, k_mod = qk_modules(layer_attention(self.layers[self.saliency_layer]))
            # k is always taken: its shape gives crops x tokens for the marker channel.
            handles.append(k_mod.register_forward_hook(this_thread(self._store("k"))))
            if SALIENCY in self.needs:
                handles.append(q_mod.register_forward_hook(this_thread(self._store("q"))))
            if PATCH_HIDDEN in self.needs:
                handles.append(self.layers[self.text_layer].register_forward_hook(this_thread(self._store("hidden"))))
            if TOWER in self.needs:  # the layer whose output the model projects
                handles.append(self.layers[self.feature_layer].register_forward_hook(this_thread(self._store("tower"))))
            if LAST_QK in self.needs:
                last_q, last_k = qk_modules(layer_attention(self.layers[-1]))
                handles.append(last_q.register_forward_hook(this_thread(self._store("last_q"))))
                handles.append(last_k.register_forward_hook(this_thread(self._store("last_k"))))
            if IMAGE_KEY in self.needs:
                handles.append(
                    self.tower.register_forward_pre_hook(
                        this_thread(lambda _m, args, kwargs: self.values.__setitem__(
                            "pixels", (args or (kwargs["pixel_values"],))[0])),
                        with_kwargs=True,
                    )
                )
            yield self
        finally:
            for h in handles:
                h.remove()

    def per_crop_signals(self, has_cls: bool, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``[crops, T, C]``: channel 0 marks [CLS] (1.0), then saliency, hidden states, keys.
        ``valid`` (``[crops, T]`` bool, no [CLS]): patches the tower attends to, the rest padding."""
        if "k" not in self.values:
            raise RuntimeError("the vision tower did not run its scoring layer; is the layer index right?")
        channels = []
        ref = self.values["k"]
        crops, t = ref.shape[:2]
        marker = torch.zeros(crops, t, 1, device=ref.device)
        if has_cls:
            marker[:, 0] = 1.0
        channels.append(marker)
        if SALIENCY in self.needs:
            attn = layer_attention(self.layers[self.saliency_layer])
            heads, scale = int(attn.num_heads), float(getattr(attn, "scale", 0) or 0) or None
            q, k = self.values["q"], self.values["k"]
            sal = ops.cls_attention(q, k, heads, scale) if has_cls else ops.received_attention(q, k, heads, scale, valid)
            channels.append(sal.unsqueeze(-1))
        if PATCH_HIDDEN in self.needs:
            channels.append(self.values["hidden"].float())
        if KEYS in self.needs:
            channels.append(self.values["k"].float())
        return torch.cat([c.float() for c in channels], dim=-1)

    def image_keys(self, crops_per_image: list[int]) -> list[int] | None:
        if IMAGE_KEY not in self.needs:
            return None
        pixels = self.values["pixels"]
        return [pixel_key(chunk) for chunk in torch.split(pixels, crops_per_image)]
