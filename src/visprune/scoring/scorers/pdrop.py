"""``pdrop``: PyramidDrop, image tokens dropped in stages by the last instruction token's attention."""

from __future__ import annotations

import math
from typing import Any

import torch

from ... import ops
from .base import register_scorer
from .llm_pruning import InLLMScorer, StageView, decoder_layers, last_token_attention


def stage_counts(n: torch.Tensor, k: torch.Tensor, stages: int) -> list[torch.Tensor]:
    """Tokens kept after each of ``stages`` stages: ``floor(n * (k/n)^(s/S))``, the last exactly ``k``."""
    out = []
    for s in range(1, stages + 1):
        if s == stages:
            out.append(k)
            continue
        share = (k.double() / n.clamp_min(1).double()) ** (s / stages)
        out.append(torch.maximum((n.double() * share + 1e-6).floor().to(torch.int64), k))
    return out


@register_scorer("pdrop")
class PyramidDropScorer(InLLMScorer):
    """PyramidDrop (Xing et al., CVPR 2025, arXiv 2410.17247). Follows the official code,
    github.com/Cooperx521/PyramidDrop: ``llava/model/modeling_llama_pdrop.py``,
    ``LlamaModel.pdrop_forward`` (a rank-and-drop after the layers of ``layer_list``) and
    ``LlamaModel.pdrop_rank_drop`` (the ranking), with the evaluation scripts' settings
    (``scripts/v1_5/pdrop_eval/*.sh``: ``layer_list [8,16,24]``, ``image_token_ratio_list
    [0.5,0.25,0.125]``, i.e. lambda = 0.5, on LLaVA-1.5's 32 layers).

    At each stage layer ``L``, before ``L`` runs, ``L``'s own ``input_layernorm``, q/k projections
    and rotary terms give the attention of the last instruction token (the prompt's last position)
    to every key (softmax over the present keys in float32, heads averaged, as the official row);
    the image tokens still present are ranked by it and the top share survives into ``L`` and up
    (their KV cache holds only those). Recomputed from q/k (O(L*D)), so SDPA stays.

    Budget: the budget (``keep`` / ``k`` / ``energy`` / ``iqr``, read on the first stage's scores)
    is the number of image tokens left after the last stage; stage ``s`` of ``S`` keeps
    ``floor(N * (k/N)^(s/S))``. ``keep=0.125`` with three stages is the official lambda = 0.5
    (``[0.5, 0.25, 0.125]``); ``last_selection(model).kept`` is what survives the last stage,
    ``.scores`` the first stage's attention.

    Args:
        layers: the stage layers (ascending, each in ``1 .. n_layers-1``). ``None`` (default): the
            official ``[8, 16, 24]`` of a 32-layer LM scaled to this one, ``round(n*j/4)`` for
            ``j = 1, 2, 3``, kept where in ``1 .. n-1`` and distinct (``[1]`` for 2 layers,
            ``[1, 2, 3]`` for 4). ``PruneConfig.llm_layer`` is not read.

        positions: ``"compact"`` (default, as the official code: after each drop the kept tokens are
            numbered afresh from the row's first one, and decoding continues after the last kept
            position) or ``"original"`` (a variant: every kept token keeps its position in the
            unpruned prompt, as FastV and DART do). Qwen2-VL's 3-D M-RoPE positions have no
            contiguous renumbering: they stay original there.
    """

    def __init__(self, layers: tuple[int, ...] | list[int] | None = None, positions: str = "compact") -> None:
        if positions not in ("compact", "original"):
            raise ValueError(f"positions must be 'compact' (the official) or 'original', got {positions!r}")
        self.positions = positions
        self.compact_positions = positions == "compact"
        if layers is not None:
            layers = tuple(layers)
            if not layers or any(isinstance(v, bool) or not isinstance(v, int) for v in layers) or \
                    list(layers) != sorted(set(layers)):
                raise ValueError(f"layers must be distinct ascending integers, got {layers!r}")
        self.layers = layers

    def stage_layers(self, config: Any, n_layers: int) -> list[int]:
        if self.layers is None:
            layers = sorted({round(n_layers * j / 4) for j in (1, 2, 3)} & set(range(1, n_layers)))
            if not layers:
                raise ValueError(f"pdrop needs a language model of at least 2 layers, this one has {n_layers}")
            return layers
        if self.layers[0] < 1 or self.layers[-1] >= n_layers:
            raise ValueError(f"pdrop layers={list(self.layers)} but the language model has {n_layers} layers "
                             f"(stage layers go from 1 to {n_layers - 1})")
        return list(self.layers)

    def choose(self, stage: int, view: StageView) -> tuple[torch.Tensor, torch.Tensor]:
        layer = decoder_layers(view.model)[view.layer]
        x = layer.input_layernorm(view.hidden)
        row = last_token_attention(layer.self_attn, x, view.cos_sin, view.valid)
        scores = view.image_scores(row)
        ctx = view.ctx
        if stage == 0:
            counts = ctx.counts.to(torch.int64)
            k = torch.minimum(view.state.budget(ctx, scores).to(counts.device, torch.int64), counts)
            n_stages = len(self.stage_layers(view.state.config, len(decoder_layers(view.model))))
            view.memo["targets"] = stage_counts(counts, k, n_stages)
        target = view.memo["targets"][stage]
        masked = torch.where(ctx.candidates & view.alive, scores, torch.full_like(scores, -math.inf))
        return ops.topk_mask(masked, target.to(scores.device)) | ctx.protected, scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={self.layers!r}, positions={self.positions!r})"
