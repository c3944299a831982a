"""``prune_`` / ``unprune_``: patch one model instance, restore it exactly."""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .measure import clock
from .adapters import Adapter, get_adapter
from .batching import PromptLayout
from .scoring.budgets import BUDGETS, Budget
from .config import PruneConfig
from .pipeline import Selection, build_context, select, temporal_repeats
from .scoring.scorers import SCORERS, Scorer

STATE_ATTR = "_visprune_state"
QUESTION_KWARG = "visprune_question"


@dataclass
class PruneState:
    """Everything ``prune_`` changed or built, kept on the model so ``unprune_`` can undo it."""

    config: PruneConfig
    adapter: Adapter
    scorer: Scorer
    budget: Budget
    processor: Any
    original_class: type
    # per thread: ``last``, the last successful call's selection (None when it had no image), and
    # ``called``, whether a pruned call has succeeded on this thread since prune_
    calls: threading.local = field(default_factory=threading.local, repr=False)


def is_pruned(model: nn.Module) -> bool:
    return STATE_ATTR in model.__dict__


def _state(model: nn.Module) -> PruneState:
    if not is_pruned(model):
        raise ValueError("this model is not pruned: call visprune.prune_(model, PruneConfig(...)) first")
    return model.__dict__[STATE_ATTR]


def prune_(model: nn.Module, config: PruneConfig | dict | None = None, processor: Any = None) -> nn.Module:
    """Make ``model`` drop visual tokens on every ``forward`` / ``generate`` call, in place.

    Args:
        model: a supported ``...ForConditionalGeneration`` (see ``visprune.adapters.ADAPTERS``).
        config: a :class:`PruneConfig` (or its dict); default ``PruneConfig()``.
        processor: the model's processor (or tokenizer); text-aware scorers use it to read the
            question back out of the prompt.

    Returns:
        the same model. Everything is checked before the model is touched, so on any error the
        model is left as it was.
    """
    if is_pruned(model):
        raise ValueError("this model is already pruned: call visprune.unprune_(model) before pruning it again")
    if config is None:
        config = PruneConfig()
    elif isinstance(config, dict):
        config = PruneConfig.from_dict(config)
    elif not isinstance(config, PruneConfig):
        raise TypeError(f"config must be a PruneConfig or a dict, got {type(config).__name__}")
    adapter = get_adapter(model)
    adapter.check_layers(model, config)
    if config.temporal is not None and not adapter.video_input_keys:
        raise TypeError(f"temporal={config.temporal!r} prunes repeats across a video's frames; "
                        f"{model.config.model_type} takes no video inputs (videos are pruned on the Qwen-VL family: "
                        "qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_5; llava_onevision, llava_next_video). Leave temporal=None")
    scorer = config.scorer if isinstance(config.scorer, Scorer) else SCORERS.get(config.scorer)()
    budget = config.budget if isinstance(config.budget, Budget) else BUDGETS.get(config.budget)()
    scorer.setup(model, config, processor)
    budget.setup(model, config, processor)
    adapter.check_config(model, config, scorer)
    adapter.check_tower(model, config, scorer)
    adapter.check_positions(model, config, scorer)
    if scorer.patch_layer is not None and scorer.patch_layer != config.text_layer:
        # the adapter captures PATCH_HIDDEN at text_layer: here, the layer the scorer chose in setup
        config = config.replace(text_layer=scorer.patch_layer)
        adapter.check_layers(model, config)
    state = PruneState(config, adapter, scorer, budget, processor, type(model))
    model.__dict__[STATE_ATTR] = state
    model.__class__ = _pruned_class(type(model))
    return model


def unprune_(model: nn.Module) -> nn.Module:
    """Undo :func:`prune_` exactly: the original class, no hooks, no extra attributes."""
    state = _state(model)
    model.__class__ = state.original_class
    del model.__dict__[STATE_ATTR]
    return model


def last_kept(model: nn.Module) -> list[torch.Tensor]:
    """Kept visual-token indices of this thread's last pruned call: one ascending ``LongTensor`` per image.

    Where videos are pruned too (the Qwen-VL family), one entry per image and then one per video:
    the images in prompt order, then the videos in prompt order (the order of ``pixel_values`` /
    ``pixel_values_videos``); a video's indices run over all its frames' tokens, frame by frame.

    Per thread: several threads may call one pruned model at once, and each gets its own call's
    selection here (and exactly the output it would get alone).

    Indices refer to the image's visual tokens as the unpruned model would feed them to its
    language model (for LLaVA-NeXT: the packed sequence, newline tokens included).
    """
    return [k.cpu() for k in last_selection(model).kept]


def last_selection(model: nn.Module) -> Selection:
    """The full record of this thread's last pruned call (features, signals, kept indices, timing, and
    ``relevance``: which question relevance ran, ``"clip:<hub id or folder>"``, ``"lmtext"`` or None;
    ``group_kept``: per video, the tokens kept in each temporal group (frame pair or frame); with
    ``PruneConfig(temporal=...)``, ``temporal_dropped``: per video, the tokens the temporal stage dropped as
    repeats)."""
    state = _state(model)
    last = getattr(state.calls, "last", None)
    if last is None:
        if getattr(state.calls, "called", False):
            raise ValueError("the last pruned call had no image (no pixel_values), so nothing was kept or dropped")
        raise ValueError("the pruned model has not seen an image yet: call generate or forward with pixel_values "
                         "(or pixel_values_videos, where videos are pruned)")
    return last


# --- the patched class ------------------------------------------------------------------------

_CLASS_CACHE: dict[type, type] = {}


def _pruned_class(cls: type) -> type:
    """A subclass of ``cls`` whose ``forward`` and ``generate`` prune first. Made once per class."""
    if cls not in _CLASS_CACHE:
        _CLASS_CACHE[cls] = type(
            cls.__name__,
            (cls,),
            {
                "__doc__": _PATCH_DOC.format(name=cls.__name__),
                "__module__": cls.__module__,
                "forward": _wrapping(cls.forward, _forward),
                "generate": _wrapping(cls.generate, _generate),
                "_visprune_patched": True,
            },
        )
    return _CLASS_CACHE[cls]


def _wrapping(original, impl):
    """A new function per class: ``functools.wraps`` on the shared ``impl`` itself would leave every
    pruned class with the signature of the last one made, which ``generate`` validates kwargs against."""

    @functools.wraps(original)
    def method(self, *args, **kwargs):
        return impl(self, *args, **kwargs)

    return method


_PATCH_DOC = """{name}, pruned by visprune.

Modifications:
- ``forward`` and ``generate``, when given ``pixel_values``, encode the images once, score and
  select visual tokens, then call the original method with what the architecture's adapter
  builds from the selection: for LLaVA and Qwen, ``input_ids`` / ``attention_mask`` / ``labels``
  shortened to the kept placeholders and the kept features as ``mm_encoder_outputs``; for
  BLIP-2 and IDEFICS, temporary hooks active during the call; for FastV, hooks inside the
  language model.
- ``generate`` returns the original prompt followed by the new tokens, as the unpruned model does.
- An extra keyword ``visprune_question`` overrides the question read from the prompt.
Undo with ``visprune.unprune_(model)``.
"""


def _bind(fn, args: tuple, kwargs: dict) -> dict:
    if not args:
        return dict(kwargs)
    bound = inspect.signature(fn).bind_partial(None, *args, **kwargs).arguments
    bound.pop(next(iter(inspect.signature(fn).parameters)))  # self
    extra = bound.pop("kwargs", {})
    return {**bound, **extra}


@contextlib.contextmanager
def _pruned_call(model: nn.Module, kwargs: dict, side: str | None):
    """Prune the images in ``kwargs`` for one call: yields the new kwargs and the original ``input_ids``.

    Every hook and temporary attribute the call needs lives in one ``ExitStack``, entered as it is
    made, so whatever the call raises they are all removed and the model is pruned exactly as
    before it. The call's selection becomes ``last_kept`` only when the call succeeds; a call
    without images leaves none, so ``last_kept`` says so instead of returning an older call's tokens.
    """
    state: PruneState = model.__dict__[STATE_ATTR]
    with contextlib.ExitStack() as stack:
        kwargs, input_ids, sel = _prepare(model, state, kwargs, side, stack)
        yield kwargs, input_ids
    state.calls.last, state.calls.called = sel, True


def _prepare(model: nn.Module, state: PruneState, kwargs: dict, side: str | None, stack: contextlib.ExitStack):
    question = kwargs.pop(QUESTION_KWARG, None)
    state.adapter.check_inputs(model, kwargs)  # e.g. videos where they are not pruned: before any model runs
    state.adapter.check_call(model, kwargs, state.config, state.scorer)
    if not state.adapter.has_images(kwargs):
        return kwargs, None, None
    input_ids = kwargs.get("input_ids")
    if input_ids is None:
        raise ValueError("visprune needs input_ids with the image placeholder tokens (inputs_embeds is not supported)")
    if kwargs.get("mm_encoder_outputs") is not None:
        raise ValueError("pass either pixel_values or mm_encoder_outputs, not both")
    if isinstance(kwargs.get("position_ids"), torch.Tensor):
        raise ValueError("explicit position_ids cannot be combined with pruning; leave them out")
    mask = kwargs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    adapter = state.adapter
    image_inputs = {k: kwargs.pop(k) for k in (*adapter.image_input_keys, *adapter.video_input_keys) if k in kwargs}
    layout = PromptLayout.read(  # the prompt, read once
        input_ids, mask, adapter.image_token_id(model), tuple(adapter.visual_tokens(model).values()))
    if getattr(state.scorer, "in_llm", False):
        kwargs, sel = _prepare_in_llm(model, state, kwargs, input_ids, mask, image_inputs, question, side, layout, stack)
        return kwargs, input_ids, sel
    sel = select(state, model, input_ids, mask, image_inputs, question, layout)
    t0 = clock.now()
    kwargs, context = state.adapter.apply(model, sel, kwargs, input_ids, mask, image_inputs, side)
    stack.enter_context(context)
    sel.apply_seconds = clock.now() - t0
    return kwargs, input_ids, sel


def _prepare_in_llm(model, state, kwargs, input_ids, mask, image_inputs, question, side, layout, stack):
    """In-LLM scorers (FastV): every visual token enters the LM; the scorer's layer hooks prune inside it."""
    enc, ctx, rows, encode_seconds = build_context(state, model, input_ids, mask, image_inputs, question, layout)
    if state.config.temporal is not None:  # video repeats are neither candidates nor kept, as before the LM
        ctx.repeats = temporal_repeats(enc, state.config.temporal, ctx.valid)
    everything = [torch.arange(f.shape[0], device=f.device) for f in enc.features]
    sel = Selection(encoded=enc, kept=everything, image_rows=rows, score_seconds=0.0, encode_seconds=encode_seconds,
                    layout=layout, relevance=state.scorer.relevance_source, repeats=ctx.repeats)
    kwargs, context = state.adapter.apply(model, sel, kwargs, input_ids, mask, image_inputs, side)
    stack.enter_context(context)
    stack.enter_context(state.scorer.llm_hooks(model, state, sel, ctx, kwargs["input_ids"], kwargs["attention_mask"]))
    return kwargs, sel


def _forward(self, *args, **kwargs):
    state: PruneState = self.__dict__[STATE_ATTR]
    with _pruned_call(self, _bind(state.original_class.forward, args, kwargs), side=None) as (kwargs, _):
        return state.original_class.forward(self, **kwargs)


def _generate(self, *args, **kwargs):
    state: PruneState = self.__dict__[STATE_ATTR]
    kwargs = _bind(state.original_class.generate, args, kwargs)
    if "inputs" in kwargs and kwargs.get("inputs") is not None and "input_ids" not in kwargs:
        kwargs["input_ids"] = kwargs.pop("inputs")
    with _pruned_call(self, kwargs, side="left") as (kwargs, original_ids):
        out = state.original_class.generate(self, **kwargs)
    if original_ids is None or _encoder_decoder(self):  # encoder-decoder generate returns new tokens only
        return out
    return _restore_prompt(out, original_ids, kwargs["input_ids"].shape[1])


def _encoder_decoder(model: nn.Module) -> bool:
    """True if ``generate`` returns decoder tokens only (BLIP-2 / InstructBLIP with a FLAN-T5)."""
    lm = getattr(model, "language_model", None)
    return any(bool(getattr(getattr(m, "config", None), "is_encoder_decoder", False)) for m in (model, lm))


def _restore_prompt(out, original_ids: torch.Tensor, pruned_len: int):
    """Put the caller's own prompt back in front of the generated tokens."""
    seqs = out if isinstance(out, torch.Tensor) else out.sequences
    expand = seqs.shape[0] // original_ids.shape[0]
    prompt = original_ids.repeat_interleave(expand, dim=0).to(seqs.device)
    full = torch.cat([prompt, seqs[:, pruned_len:]], dim=1)
    if isinstance(out, torch.Tensor):
        return full
    out.sequences = full
    return out
