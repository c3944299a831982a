"""``fastv``: in-LLM pruning by the attention of the last prompt token (FastV).

The scorer and the decoder-layer hooks that apply it inside the language model, active for one call.

Modifications, for the duration of one ``forward`` / ``generate`` and only on this instance:
- a forward pre-hook on layer ``K-1``'s attention records its (normalised) input and rotary terms;
- forward pre-hooks on layers ``K ..`` shorten ``hidden_states``, the attention mask, the rotary
  terms and ``position_ids`` to the kept positions at prefill, and the attention mask's key
  columns at every decoding step (their KV cache holds only kept positions).
All hooks are removed when the call ends. Written against transformers 5.23-5.25's decoder layers
(``LlamaDecoderLayer``, ``Qwen2DecoderLayer``, ``Qwen2VLDecoderLayer``), whose forward takes
``hidden_states`` and the keywords ``attention_mask``, ``position_embeddings``, ``position_ids`` and
the cache (``past_key_values`` before 5.24, ``cache`` since: read through :mod:`visprune.compat`).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ...callscope import this_thread
from ...compat import cache_kwarg
from ..context import ScoreContext
from ..decide import decide
from .base import Scorer, register_scorer


@register_scorer("fastv")
class FastVScorer(Scorer):
    """FastV (Chen et al., ECCV 2024, arXiv 2403.06764), Sec. 4, "FastV".

    The language model's first ``K = PruneConfig.llm_layer`` layers (default 2, the paper's
    ``K=2``) see every visual token. The attention that the last prompt token pays to each image
    token in layer ``K-1`` (heads averaged, as the official code's ``last_layer_attention``) ranks
    them; layers ``K`` and up see only the kept ones, and their KV cache holds only those, so
    ``generate`` decodes against the shorter cache. The budget (``keep`` / ``k`` / ``energy`` /
    ``iqr``) sets how many are kept per image, as for every scorer.

    The attention row is recomputed from that layer's q/k projections with the model's own rotary
    embedding (O(L*D)), so the language model keeps its SDPA / FlashAttention kernels. Layers
    below ``K`` run at full length, which is why FastV saves less than pruning before the LM at
    the same budget. Needs the same number of kept tokens in every row of a batch (ratio and fixed
    budgets on same-size images); ragged in-LLM budgets raise ``ValueError``.
    """

    in_llm = True
    needs = frozenset()

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        from .fastv import decoder_layers

        layers = decoder_layers(model)
        if config.llm_layer >= len(layers):
            raise ValueError(f"llm_layer={config.llm_layer} but the language model has {len(layers)} layers")
        check_attention(model, layers, config.llm_layer)

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        raise RuntimeError("fastv scores come from inside the language model; use it through visprune.prune_")

    def llm_hooks(self, model: nn.Module, state: Any, sel: Any, ctx: ScoreContext, input_ids, attention_mask):
        """The call's decoder-layer hooks (a context manager); fills ``sel.kept``. See :func:`fastv_hooks`."""
        return fastv_hooks(model, state, sel, ctx, input_ids, attention_mask)


def check_attention(model: nn.Module, layers: nn.ModuleList, k_layer: int) -> None:
    """Raise ``TypeError`` (at ``prune_``) where the ranking row or the shortened layers would be wrong.

    The row is recomputed as ``softmax(rotary(q_proj x) . rotary(k_proj x) * scaling)``, and the
    layers from ``K`` on are given a causal mask over the kept positions. That is the attention of
    Llama / Qwen2-style layers; refused until supported: QK-norm (``q_norm`` / ``k_norm``, Qwen3,
    Gemma 3: the row would skip the norms), sliding-window and linear-attention layers (Mistral,
    Gemma 3, Qwen3.5 / Qwen3-Next: their masks and recurrent states are not the causal full
    attention the hooks rebuild), and attention without ``q_proj`` / ``k_proj``.
    """
    text = getattr(model.config, "text_config", None) or model.config
    kind = getattr(text, "model_type", type(layers[0]).__name__)
    attn = getattr(layers[k_layer - 1], "self_attn", None)
    if attn is None or not all(hasattr(attn, name) for name in ("q_proj", "k_proj")):
        raise TypeError(f"fastv cannot run on this {kind} language model: its layers have no self_attn.q_proj / "
                        "k_proj to recompute the ranking row from")
    types = sorted({t for t in (getattr(text, "layer_types", None) or ()) if t != "full_attention"})
    if not types and getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
        types = ["sliding_attention"]
    if types:
        raise TypeError(f"fastv cannot run on this {kind} language model yet: it has {' and '.join(types)} layers, "
                        "whose masks or recurrent state the in-LLM hooks do not rebuild (only full causal "
                        "attention is supported); prune before the language model instead (e.g. scorer='atp' or 'cls')")
    if getattr(attn, "q_norm", None) is not None or getattr(attn, "k_norm", None) is not None:
        raise TypeError(f"fastv cannot run on this {kind} language model yet: its attention normalises q and k "
                        "(QK-norm), which the ranking row does not apply; prune before the language model "
                        "instead (e.g. scorer='atp' or 'cls')")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    lm = getattr(getattr(model, "model", None), "language_model", None)  # BLIP-2 has no model.model
    layers = getattr(lm, "layers", None) if lm is not None else None
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"in-LLM pruning needs model.model.language_model.layers, not found on {type(model).__name__}")
    return layers


def _last_token_attention(attn: nn.Module, hidden: torch.Tensor, cos_sin, key_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: attention of the last position's query to every key, heads averaged."""
    rotary = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb")
    b, length, _ = hidden.shape
    hd = attn.head_dim
    q = attn.q_proj(hidden[:, -1:]).view(b, 1, -1, hd).transpose(1, 2)
    k = attn.k_proj(hidden).view(b, length, -1, hd).transpose(1, 2)
    cos, sin = cos_sin
    q, _ = rotary(q, q, cos[..., -1:, :], sin[..., -1:, :])
    _, k = rotary(k, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q.float() @ k.float().transpose(-1, -2))[:, :, 0] * attn.scaling  # [B, H, L]
    logits = logits.masked_fill(~key_mask[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1).mean(1)


def _allowed_mask(allowed: torch.Tensor, like: torch.Tensor | None, attn: nn.Module) -> torch.Tensor:
    """A 4-D mask in the form the attention implementation expects (bool for SDPA, additive for eager)."""
    impl = getattr(attn.config, "_attn_implementation", "sdpa")
    if impl == "eager" or (like is not None and like.dtype.is_floating_point):
        dtype = like.dtype if like is not None and like.dtype.is_floating_point else attn.q_proj.weight.dtype
        out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return out.masked_fill(~allowed, torch.finfo(dtype).min)
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"fastv supports sdpa and eager attention, not {impl!r}")
    return allowed


@contextmanager
def fastv_hooks(model: nn.Module, state: Any, sel: Any, ctx: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Hooks that prune image tokens inside the language model during one call; fills ``sel.kept``.

    Rows may keep different numbers of tokens (per-image budgets): the shortened rows are
    left-padded with copies of their first kept position that no query may attend to (each
    attends only to itself, so nothing is NaN), with a 4-D mask built for the new layout.
    Beam search expands the batch before prefill; the selection is made once per sample.
    """
    layers = decoder_layers(model)
    k_layer = state.config.llm_layer
    image_id = state.adapter.image_token_id(model)
    is_image = input_ids == image_id
    key_mask = attention_mask.bool()
    lengths = [f.shape[0] for f in sel.encoded.features]
    full = input_ids.shape[1]
    plan: dict[str, Any] = {}

    def record(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if "index" in plan or hidden.shape[1] != full:
            return None
        expand = hidden.shape[0] // input_ids.shape[0]
        with torch.no_grad():
            cos_sin = tuple(t[::expand] if t.shape[0] == hidden.shape[0] else t for t in kwargs["position_embeddings"])
            attn = _last_token_attention(module, hidden[::expand], cos_sin, key_mask)
            rows, cols = is_image.nonzero(as_tuple=True)  # row-major: the order features fill placeholders
            scores = torch.full(ctx.valid.shape, float("-inf"), device=attn.device)
            start = 0
            for i, n in enumerate(lengths):
                scores[i, :n] = attn[rows[start : start + n], cols[start : start + n]]
                start += n
            kept, _ = decide(state.scorer, state.budget, ctx, scores)
            sel.kept, sel.scores = kept, scores
            keep = key_mask & ~is_image
            start = 0
            for i, n in enumerate(lengths):
                chosen = kept[i].to(rows.device) + start
                keep[rows[chosen], cols[chosen]] = True
                start += n
            keep = keep.repeat_interleave(expand, dim=0)
            counts = keep.sum(1)
            width = int(counts.max())
            # each row's kept positions, ascending, left-padded with copies of its first one
            order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
            slot = torch.arange(width, device=keep.device)
            pad = (width - counts).unsqueeze(1)
            index = order.gather(1, (slot - pad).clamp_min(0))
            plan.update(index=index, valid=slot >= pad)
        return None

    def shorten(module, args, kwargs):
        index = plan.get("index")
        if index is None:
            return None
        valid = plan["valid"]
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        q_len = hidden.shape[1]
        if kwargs["position_embeddings"][0].shape[-2] == full:  # prefill: drop the pruned positions everywhere
            if q_len == full:  # layer K; later layers get the already shortened output of the one before
                hidden = _take(hidden, index, 1)
            q_len = hidden.shape[1]
            kwargs["position_embeddings"] = tuple(
                _take(t, index, t.dim() - 2) if t.shape[-2] == full else t for t in kwargs["position_embeddings"]
            )
            pos = kwargs.get("position_ids")
            if isinstance(pos, torch.Tensor) and pos.shape[-1] == full:
                kwargs["position_ids"] = _take(pos, index, pos.dim() - 1)
            width = index.shape[1]
            causal = torch.ones(width, width, dtype=torch.bool, device=index.device).tril()
            eye = torch.eye(width, dtype=torch.bool, device=index.device)
            allowed = (causal[None] & valid[:, None, :]) | eye[None]
            kwargs["attention_mask"] = _allowed_mask(allowed[:, None], mask, module.self_attn)
        else:  # decoding: the cache of this layer holds the kept positions, then every new token
            past = cache_kwarg(kwargs).get_seq_length(module.self_attn.layer_idx)
            new = past + q_len - index.shape[1]
            allowed = torch.cat([valid, valid.new_ones(valid.shape[0], new)], dim=1)[:, None, None, :]
            allowed = allowed.expand(-1, 1, q_len, -1)
            if q_len > 1:
                tail = torch.ones(q_len, q_len, dtype=torch.bool, device=valid.device).tril()
                allowed = allowed.clone()
                allowed[..., -q_len:] &= tail
            kwargs["attention_mask"] = _allowed_mask(allowed, mask, module.self_attn)
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
        return args, kwargs

    handles = [layers[k_layer - 1].self_attn.register_forward_pre_hook(this_thread(record), with_kwargs=True)]
    handles += [layers[j].register_forward_pre_hook(this_thread(shorten), with_kwargs=True)
                for j in range(k_layer, len(layers))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _take(t: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """Positions ``index`` (``[B, L']``) of ``t`` along ``dim``; the batch is dim 0, or dim 1 when
    a leading axis comes first (Qwen's ``[3, B, L]`` positions). Batch-broadcast tensors are expanded."""
    bdim = 0 if t.shape[0] in (1, index.shape[0]) and dim != 0 else 1
    if t.shape[bdim] == 1 and index.shape[0] > 1:
        t = t.expand(*[index.shape[0] if d == bdim else -1 for d in range(t.dim())])
    view = [1] * t.dim()
    view[bdim], view[dim] = index.shape
    shape = list(t.shape)
    shape[dim] = index.shape[1]
    return torch.gather(t, dim, index.view(view).expand(shape))
