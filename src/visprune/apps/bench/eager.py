"""The official repositories' way of reading attention, for ``visprune bench --scoring eager``.

The official VisionZip, FasterVLM and PruMerge code read the [CLS] row from the vision tower's
attention maps, ``vision_tower(images, output_hidden_states=True, output_attentions=True)``: every
layer of the tower runs eager attention and keeps its full map. The official FastV code is a fork
of transformers 4.31, whose Llama attention is eager, and reads its ranking row from layer
``K - 1``'s map (``output_attentions=True`` there). Which layers an in-LLM scorer reads as maps is
its ``attention_layers``: DART needs no attention and PyramidDrop's official ``pdrop_rank_drop``
already recomputes the last instruction token's row from q and k, so both are left as they are.
visprune instead recomputes the one row it needs from the captured q and k and leaves the model
on SDPA.

:func:`eager_scoring` puts a model in the official way for one call: the tower (for a scorer that
reads saliency) or the language model (for an in-LLM scorer) runs eager attention, and the maps
the official code asks for are kept until the call ends, as ``output_attentions=True`` keeps them.
The selection itself is unchanged (visprune still reads its row from q and k, a negligible cost
beside the maps); ``tests/test_bench_throughput.py`` checks that the eager maps' rows select the
same tokens.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any

from torch import nn

from ...adapters.base import encoder_layers
from ...scoring.context import SALIENCY
from ...scoring.scorers import SCORERS
from ...scoring.scorers.llm_pruning import decoder_layers


def _scorer(config: Any):
    return config.scorer if not isinstance(config.scorer, str) else SCORERS.get(config.scorer)()


def reads_attention(config: Any, n_layers: int | None = None) -> str | None:
    """Which attention ``config``'s scorer reads: ``"tower"`` ([CLS] / received attention),
    ``"language_model"`` (in-LLM scorers with ``attention_layers``; ``n_layers``: the language
    model's depth, which some need to name them), or None (no attention map involved)."""
    scorer = _scorer(config)
    if getattr(scorer, "in_llm", False):
        return "language_model" if scorer.attention_layers(config, n_layers or config.llm_layer + 1) else None
    if SALIENCY in getattr(scorer, "needs", ()):
        return "tower"
    return None


@contextmanager
def eager_scoring(model: nn.Module, config: Any):
    """While active, the part of ``model`` whose attention ``config``'s scorer reads runs eager
    attention and keeps the maps the official code keeps (yields the list they are stored in).
    A LLaVA-family model (``model.model.vision_tower``, ``model.model.language_model``), as every
    benchmark geometry is."""
    lm_layers = decoder_layers(model)
    part = reads_attention(config, len(lm_layers))
    maps: list = []
    with ExitStack() as stack:
        if part == "tower":
            sub, layers = model.config.vision_config, list(encoder_layers(model.model.vision_tower))
        elif part == "language_model":
            read = _scorer(config).attention_layers(config, len(lm_layers))
            sub, layers = model.config.text_config, [lm_layers[i] for i in read]
        else:
            yield maps
            return
        before = sub._attn_implementation
        sub._attn_implementation = "eager"
        stack.callback(setattr, sub, "_attn_implementation", before)
        for layer in layers:
            handle = layer.self_attn.register_forward_hook(lambda _m, _a, out: maps.append(out[1]))
            stack.callback(handle.remove)
        stack.callback(maps.clear)
        yield maps
