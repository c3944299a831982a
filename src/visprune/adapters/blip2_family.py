"""BLIP-2 and InstructBLIP (``blip-2``, ``instructblip``): two cut points, chosen by ``cut``.

The language model of these models never sees ViT patches: a Q-Former turns the patches of each
image into ``num_query_tokens`` (32) query outputs, which ``language_projection`` maps into the
language model's input space, one image placeholder token each. So there are two places to prune:

- ``cut="query"`` (default): the projected query outputs, before the language model. This is what
  shortens the language model's input (32 -> k placeholders per image) and saves prefill compute.
  Scorers that fit: ``lmtext``, ``random``, ``divprune``, ``cdpruner`` with ``text_encoder=None``
  (any budget; ``energy`` is E-AdaPrune on the projected queries). Queries have no [CLS] attention,
  keys or patch grid, so ``cls``, ``atp``, ``visionzip``, ``vispruner`` and ``pool`` are refused
  with a ``TypeError``.
- ``cut="vit"``: the ViT patch tokens, before the Q-Former. The Q-Former cross-attends to the kept
  patches only (ragged budgets right-padded, with an ``encoder_attention_mask`` the Q-Former
  honours); the language model still receives 32 query tokens per image, so this saves Q-Former
  cross-attention work only (see ``docs/savings.md``: well under 1% of a real-size prefill).
  Scorers that fit: ``cls`` ([CLS] attention of the ViT's last layer, the one the Q-Former reads),
  ``visionzip``, ``vispruner``, ``pool`` (square patch grid after [CLS]), ``random``, ``divprune``.
  ``lmtext`` and ``cdpruner`` are refused (ViT patches are not in the language model's embedding space). [CLS] is protected.

The cut is ``PruneConfig.cut``; default ``"query"``.

Modifications against the stock models (transformers 5.23, ``modeling_blip_2.py``
``Blip2ForConditionalGeneration.get_image_features`` / ``generate`` and
``modeling_instructblip.py`` ``InstructBlipForConditionalGeneration.get_image_features`` /
``generate``), all of them only while one pruned call runs, undone when it returns:

- ``vision_model`` is *served*: its instance ``forward`` returns the output that ``encode`` already
  computed (stock ``generate`` always recomputes from pixels; this keeps the tower from running
  twice). The attribute is removed afterwards (or the one that was there, e.g. accelerate's, put
  back).
- ``cut="query"``: ``qformer`` is served its cached output as well, and ``language_projection``
  returns the kept query features of all images, flattened in batch order; ``input_ids`` (and the
  mask, labels) lose the placeholders of dropped queries with each row's layout kept (see
  ``_shorten_in_place``), so ``masked_scatter`` puts exactly the kept features into the kept
  placeholders, in ``forward`` and ``generate`` alike.
- ``cut="vit"``: a forward pre-hook on ``qformer`` replaces ``encoder_hidden_states`` by the kept
  patches of each image and ``encoder_attention_mask`` by their padding mask.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from ..measure import clock
from ..measure.savings import KEEPS, META, TEXT_TOKENS, Row, Section, build, flops, kept, meta, prefill
from .. import ops
from ..scoring.context import IMAGE_KEY, KEYS, PATCH_HIDDEN, QUESTION_EMBEDS, SALIENCY
from ..prompt import ASSISTANT_MARKERS, USER_MARKERS
from ..batching import keep_positions
from ..callscope import overriding, this_thread
from .boxes import View
from .llava_family import vicuna_7b_config
from .base import PER_TOKEN, Adapter, Encoded, _pad_id, hidden_index_to_layer, pixel_key

CUTS = ("query", "vit")

_QUERY_HELP = (
    "use scorer='lmtext', 'random', 'divprune' or 'cdpruner' with text_encoder=None (any budget; budget='energy' "
    "is E-AdaPrune), or set cut='vit' to prune ViT patches before the Q-Former with 'cls', 'visionzip', 'vispruner' "
    "or 'pool'"
)
_VIT_HELP = (
    "use scorer='cls', 'visionzip', 'vispruner', 'pool', 'random' or 'divprune', or set cut='query' to prune the "
    "projected query outputs with 'lmtext' or 'cdpruner'"
)
QUERY_UNSUPPORTED = {
    SALIENCY: "cut='query' scores the Q-Former's query outputs, which have no [CLS] attention; " + _QUERY_HELP,
    KEYS: "cut='query' scores the Q-Former's query outputs, which have no attention keys; " + _QUERY_HELP,
    PATCH_HIDDEN: "cut='query' scores the Q-Former's query outputs, not CLIP patches; " + _QUERY_HELP,
}
VIT_UNSUPPORTED = {
    QUESTION_EMBEDS: "cut='vit' scores ViT patch tokens, which are not in the language model's embedding "
    "space; " + _VIT_HELP,
    PATCH_HIDDEN: "the BLIP-2 ViT (EVA-CLIP) has no CLIP text tower in transformers to compare with; " + _VIT_HELP,
}


def cut_of(config: Any) -> str:
    """The cut point a config asks for: ``"query"`` (default) or ``"vit"``."""
    cut = getattr(config, "cut", None) or "query"
    if cut not in CUTS:
        raise ValueError(f"unknown cut {cut!r} for BLIP-2 / InstructBLIP; valid: {', '.join(CUTS)}")
    return cut


def serving(module: nn.Module, value: Any):
    """While active, ``module(...)`` returns ``value`` without running (an instance ``forward``)."""
    return overriding(module, "forward", lambda *args, **kwargs: value)


class _QkvCapture:
    """Records the fused ``qkv`` output of one BLIP ViT attention block and splits it."""

    def __init__(self, attn: nn.Module):
        self.attn = attn
        self.qkv: torch.Tensor | None = None

    @contextmanager
    def active(self):
        def hook(_module, _inputs, output):
            self.qkv = output

        handle = self.attn.qkv.register_forward_hook(this_thread(hook))
        try:
            yield self
        finally:
            handle.remove()

    def qk(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, H*hd]`` queries and keys, split exactly as ``Blip2Attention.forward`` splits them."""
        if self.qkv is None:
            raise RuntimeError("the BLIP ViT did not run its scoring layer; is the layer index right?")
        b, t, three_e = self.qkv.shape
        mixed = self.qkv.reshape(b, t, 3, three_e // 3)
        return mixed[:, :, 0], mixed[:, :, 1]


class Blip2FamilyAdapter(Adapter):
    """Shared logic of BLIP-2 and InstructBLIP; see the module docstring for the two cuts."""

    image_input_keys = ("pixel_values", "interpolate_pos_encoding")
    user_markers = ("Question:", *USER_MARKERS)
    assistant_markers = ("Answer:", *ASSISTANT_MARKERS)
    processor_places_images = True  # Blip2Processor / InstructBlipProcessor prepend num_query_tokens <image>

    def check(self, model: nn.Module) -> None:
        for name in ("vision_model", "qformer", "query_tokens", "language_projection", "language_model"):
            if not hasattr(model, name):
                raise TypeError(f"{type(model).__name__} lacks {name}; pass the ...ForConditionalGeneration model")

    def vision_depth(self, model: nn.Module) -> int:
        return len(model.vision_model.encoder.layers)

    def check_config(self, model: nn.Module, config: Any, scorer: Any) -> None:
        from ..scoring.scorers.pool import PoolScorer

        cut = cut_of(config)
        table = QUERY_UNSUPPORTED if cut == "query" else VIT_UNSUPPORTED
        for signal in sorted(scorer.needs):
            if signal in table:
                raise TypeError(f"scorer {config.scorer_name!r} cannot run on {model.config.model_type}: {table[signal]}")
        if cut == "query" and isinstance(scorer, PoolScorer):
            raise TypeError(
                f"scorer 'pool' cannot run on {model.config.model_type} with cut='query': the query outputs form no "
                "patch grid; " + _QUERY_HELP
            )

    def picture_views(self, model: nn.Module, processor: Any, picture: Any, config: Any = None) -> tuple[list[View], int] | None:
        """``cut="vit"``: the ViT's [CLS], then its patch grid over the whole picture, which the processor
        resizes to the tower's square; ``cut="query"``: None (the Q-Former's queries lie nowhere in it)."""
        if cut_of(config) != "vit":
            return None
        vis = model.config.vision_config
        side = vis.image_size // vis.patch_size
        return [View(side, side, (0.0, 0.0, 1.0, 1.0), 1)], 1 + side * side

    def image_features(self, model: nn.Module, image_inputs: dict):
        """The model's own ``get_image_features`` (vision tower, Q-Former, projection)."""
        return model.get_image_features(**image_inputs, return_dict=True)

    def encode(self, model: nn.Module, image_inputs: dict, needs: frozenset[str], config: Any) -> Encoded:
        cut = cut_of(config)
        tower = model.vision_model
        layers = tower.encoder.layers
        capture = None
        if cut == "vit" and (SALIENCY in needs or KEYS in needs):
            layer = hidden_index_to_layer(config.layer if config.layer is not None else -1, len(layers))
            capture = _QkvCapture(layers[layer].self_attn)
        pixels = image_inputs["pixel_values"]
        with ExitStack() as stack:
            if capture is not None:
                stack.enter_context(capture.active())
            t0 = clock.now()
            if cut == "vit":
                vision = tower(
                    pixel_values=pixels,
                    interpolate_pos_encoding=image_inputs.get("interpolate_pos_encoding", False),
                    return_dict=True,
                )
                features, qformer = list(vision.last_hidden_state), None
            else:
                out = self.image_features(model, image_inputs)
                vision, qformer = out.vision_outputs, out.qformer_outputs
                features = list(out.pooler_output)
            model_seconds = clock.now() - t0
        n = features[0].shape[0]
        protected = torch.zeros(n, dtype=torch.bool, device=features[0].device)
        if cut == "vit":
            protected[0] = True  # [CLS]: the Q-Former reads it in every image; kept, never counted
        enc = Encoded(features=features, protected=[protected.clone() for _ in features])
        enc.model_seconds = model_seconds
        enc.extras.update(cut=cut, vision=vision, qformer=qformer)
        if IMAGE_KEY in needs:
            enc.image_keys = [pixel_key(p) for p in pixels]
        if cut == "query":
            return enc
        enc.image_rows = list(range(len(features)))  # one image per row; 32 placeholders, not n
        side = math.isqrt(n - 1)
        enc.grids = [(side, side) if side * side == n - 1 else None for _ in features]
        if capture is not None:
            q, k = capture.qk()
            attn = capture.attn
            if SALIENCY in needs:
                enc.saliency = list(ops.cls_attention(q, k, int(attn.num_heads), float(attn.scale)))
            if KEYS in needs:
                enc.keys = list(k.float())
        return enc

    def apply(self, model, sel, kwargs, input_ids, attention_mask, image_inputs, side):
        extras = sel.encoded.extras
        if extras["cut"] == "query":
            _shorten_in_place(model, self.image_token_id(model), sel, kwargs, input_ids, attention_mask)
            kept = torch.cat(sel.kept_features)[None]
            context = _served(model, extras, kept=kept)
        else:
            patches, valid = ops.pad_ragged(list(sel.kept_features))
            context = _served(model, extras, patches=patches, patch_mask=valid.long())
        kwargs.update(image_inputs)  # stock forward / generate take pixel_values (and the Q-Former text)
        return kwargs, context


def _shorten_in_place(model, image_id, sel, kwargs, input_ids, attention_mask) -> None:
    """Drop the placeholders of dropped queries, keeping the processor's layout of every row.

    ``Blip2Processor`` / ``InstructBlipProcessor`` put the placeholders *before* the padded text
    (``[queries][padding][text]``), and the padding stays where it was: a row's new padding goes
    where its old padding was (or, in a row that had none, right after its placeholders). Keeping
    all queries then reproduces the stock inputs exactly, also for language models whose positions
    count padding (Llama's ``forward``, T5's relative positions).
    """
    keep = keep_positions(input_ids, attention_mask, image_id, sel.image_token_keep())
    pads = attention_mask == 0
    is_image = input_ids == image_id
    cols = torch.arange(input_ids.shape[1], device=input_ids.device)
    first_pad = torch.where(pads, cols, input_ids.shape[1]).amin(1)
    after_images = torch.where(is_image, cols + 1, 0).amax(1)
    cut = torch.where(pads.any(1), first_pad, after_images)
    insert = (keep & (cols[None] < cut[:, None])).sum(1)
    new_mask = _regather(attention_mask, keep, 0, insert)
    for name, pad in PER_TOKEN.items():
        value = kwargs.get(name)
        if name != "attention_mask" and isinstance(value, torch.Tensor) and value.shape[:2] == input_ids.shape:
            kwargs[name] = _regather(value, keep, pad, insert)
    kwargs["input_ids"] = _regather(input_ids, keep, _pad_id(model, input_ids, attention_mask), insert)
    kwargs["attention_mask"] = new_mask


def _regather(values: torch.Tensor, keep: torch.Tensor, pad_value, insert: torch.Tensor) -> torch.Tensor:
    """The kept entries of each row, with the row's padding after its first ``insert[i]`` kept entries."""
    lengths = keep.sum(1)
    width = int(lengths.max()) if lengths.numel() else 0
    out = values.new_empty((values.shape[0], width, *values.shape[2:]))
    out.fill_(pad_value)
    rank = keep.long().cumsum(1) - 1
    rank = rank + (rank >= insert[:, None]).long() * (width - lengths)[:, None]
    rows, cols = keep.nonzero(as_tuple=True)
    out[rows, rank[rows, cols]] = values[rows, cols]
    return out


@contextmanager
def _served(model: nn.Module, extras: dict, kept=None, patches=None, patch_mask=None):
    with ExitStack() as stack:
        stack.enter_context(serving(model.vision_model, extras["vision"]))
        if kept is not None:
            stack.enter_context(serving(model.qformer, extras["qformer"]))
            stack.enter_context(serving(model.language_projection, kept))
        else:

            def hand_kept_patches(_module, args, kwargs):
                given = kwargs.get("encoder_hidden_states")
                if given is None or given.shape[0] != patches.shape[0]:
                    raise RuntimeError("internal: the Q-Former was called with unexpected image inputs; please report")
                kwargs = dict(kwargs, encoder_hidden_states=patches.to(given), encoder_attention_mask=patch_mask)
                return args, kwargs

            handle = model.qformer.register_forward_pre_hook(this_thread(hand_kept_patches), with_kwargs=True)
            stack.callback(handle.remove)
        try:
            yield
        finally:  # the cached outputs served their one call; do not keep them alive in last_selection
            extras.pop("vision", None)
            extras.pop("qformer", None)


# --- savings at published size (docs/savings.md, visprune.measure.savings) ---


def _blip_configs(tiny: bool, instruct: bool):
    from transformers import OPTConfig

    if tiny:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      image_size=56, patch_size=14)
        qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       vocab_size=1000)
        text = vicuna_7b_config(True) if instruct else OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                                                 num_attention_heads=4, word_embed_proj_dim=64,
                                                                 vocab_size=1000)
        return vision, qformer, text, 8
    vision = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                  image_size=224, patch_size=14, qkv_bias=True)
    qformer = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   cross_attention_frequency=2, encoder_hidden_size=1408, vocab_size=30523 if instruct else 30522)
    if instruct:  # Vicuna-7B v1.1
        text = vicuna_7b_config(False, 32001)
    else:  # OPT-2.7b
        text = OPTConfig(hidden_size=2560, ffn_dim=10240, num_hidden_layers=32, num_attention_heads=32,
                         word_embed_proj_dim=2560, vocab_size=50272, max_position_embeddings=2048)
    return vision, qformer, text, 32


def blip_savings(tiny: bool, instruct: bool) -> list[Section]:
    """BLIP-2 OPT-2.7b (Salesforce/blip2-opt-2.7b) or InstructBLIP Vicuna-7B (Salesforce/instructblip-vicuna-7b),
    one 224 px image, at both cut points: ``query`` shortens the language model's input, ``vit`` only the
    Q-Former's cross-attention."""
    if instruct:
        from transformers import InstructBlipConfig as Config, InstructBlipForConditionalGeneration as Model
    else:
        from transformers import Blip2Config as Config, Blip2ForConditionalGeneration as Model
    vision, qformer, text, queries = _blip_configs(tiny, instruct)
    cfg = Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(), num_query_tokens=queries,
                 image_token_index=text.vocab_size - 1)
    m = build(Model, cfg)
    s, p = cfg.vision_config.image_size, cfg.vision_config.patch_size
    patches = (s // p) ** 2
    vision_f = flops(m.vision_model, meta(1, 3, s, s))
    qh = cfg.qformer_config.hidden_size
    instruction = 20  # Q-Former tokens of the instruction (InstructBLIP reads it; BLIP-2 does not)

    def connector(n_patches: int) -> int:
        kwargs = dict(query_embeds=meta(1, queries, qh),
                      encoder_hidden_states=meta(1, n_patches, cfg.vision_config.hidden_size))
        if instruct:
            ids = torch.zeros(1, instruction, dtype=torch.long, device=META)
            kwargs.update(input_ids=ids)  # no mask: all attend (a meta mask cannot be inspected)
        return flops(m.qformer, **kwargs) + flops(m.language_projection, meta(1, queries, qh))

    width = cfg.text_config.hidden_size
    lm = m.language_model
    head = lm.lm_head
    body = lm.model.decoder if hasattr(lm.model, "decoder") else lm.model
    full_connector = connector(patches + 1)
    query_rows, vit_rows = [], []
    for keep in KEEPS:
        k = kept(queries, keep)
        query_rows.append(Row(keep, k, k, vision_f, full_connector, prefill(body, head, width, TEXT_TOKENS + k)))
        n = kept(patches, keep) + 1  # [CLS] protected
        vit_rows.append(Row(keep, n, queries, vision_f, connector(n), prefill(body, head, width, TEXT_TOKENS + queries)))
    name = "InstructBLIP Vicuna-7B" if instruct else "BLIP-2 OPT-2.7b"
    source = ("Salesforce/instructblip-vicuna-7b's config.json" if instruct
              else "Salesforce/blip2-opt-2.7b's config.json")
    return [
        Section(f"{name}, cut='query'", f"{queries} projected Q-Former query outputs, pruned before the language model",
                query_rows, source=source),
        Section(f"{name}, cut='vit'", f"{patches} ViT patches + [CLS] (protected), pruned before the Q-Former; the "
                f"language model still receives {queries} query tokens", vit_rows, source=source),
    ]
