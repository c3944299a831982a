"""The machinery shared by in-LLM scorers (``fastv``, ``dart``, ``pdrop``): decoder-layer hooks that
drop image tokens inside the language model, active for one call.

A scorer says only which image tokens survive at which layer (:class:`InLLMScorer`: ``stage_layers``
and ``choose``); this module does the rest. Modifications, for the duration of one ``forward`` /
``generate`` and only on this instance:
- a forward pre-hook on the attention of the layer before each stage layer records its
  (normalised) input and rotary terms;
- a forward pre-hook on each stage layer asks the scorer which image tokens to keep there
  (prefill only), from that record and the layer's input;
- forward pre-hooks on every layer from the first stage on shorten ``hidden_states``, the attention
  mask, the rotary terms and ``position_ids`` to the kept positions at prefill, and the attention
  mask's key columns at every decoding step (their KV cache holds only kept positions).
All hooks are removed when the call ends. Written against transformers 5.23-5.25's decoder layers
(``LlamaDecoderLayer``, ``Qwen2DecoderLayer``, ``Qwen2VLDecoderLayer``), whose forward takes
``hidden_states`` and the keywords ``attention_mask``, ``position_embeddings``, ``position_ids`` and
the cache (``past_key_values`` before 5.24, ``cache`` since: read through :mod:`visprune.compat`).
Kept tokens keep their original positions (rotary terms and ``position_ids`` are gathered, not
renumbered).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...callscope import this_thread
from ...compat import cache_kwarg
from ..context import ScoreContext
from .base import Scorer


class InLLMScorer(Scorer):
    """Base of the in-LLM scorers: every visual token enters the language model, and image tokens are
    dropped at the layers ``stage_layers`` returns, by ``choose``. Subclasses implement those two."""

    in_llm = True
    needs = frozenset()
    compact_positions = False  # True: the kept tokens are numbered afresh after each stage (1-D RoPE only)

    def stage_layers(self, config: Any, n_layers: int) -> list[int]:  # pragma: no cover - interface
        """The layers (ascending, each in ``1 .. n_layers-1``) before which tokens are dropped."""
        raise NotImplementedError

    def attention_layers(self, config: Any, n_layers: int) -> list[int]:
        """The layers whose attention the official code reads as a full map (``output_attentions``),
        where visprune recomputes one row instead; ``visprune bench --scoring eager`` runs those the
        official way. Default: none (DART's pivots need no attention; PyramidDrop's official code
        recomputes its row from q and k, as visprune does)."""
        return []

    def choose(self, stage: int, view: "StageView") -> tuple[torch.Tensor, torch.Tensor | None]:  # pragma: no cover
        """``(keep [I, N] bool, scores [I, N] or None)``: which of the still-present image tokens
        survive this stage (protected ones included), and the stage's scores (the first stage's go
        to ``last_selection(model).scores``)."""
        raise NotImplementedError

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        layers = decoder_layers(model)
        self.stage_layers(config, len(layers))  # validates the layers against this language model
        check_attention(model, layers, self.name)

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        raise RuntimeError(f"{self.name} scores come from inside the language model; use it through visprune.prune_")

    def llm_hooks(self, model: nn.Module, state: Any, sel: Any, ctx: ScoreContext, input_ids, attention_mask):
        """The call's decoder-layer hooks (a context manager); fills ``sel.kept``. See :func:`pruning_hooks`."""
        return pruning_hooks(model, state, sel, ctx, input_ids, attention_mask)


def check_attention(model: nn.Module, layers: nn.ModuleList, name: str = "fastv") -> None:
    """Raise ``TypeError`` (at ``prune_``) where the recomputed q/k or the shortened layers would be wrong.

    Attention rows and keys are recomputed as ``rotary(q_proj x)``, ``rotary(k_proj x)``, and the
    layers after a stage are given a causal mask over the kept positions. That is the attention of
    Llama / Qwen2-style layers; refused until supported: QK-norm (``q_norm`` / ``k_norm``, Qwen3,
    Gemma 3: the recomputation would skip the norms), sliding-window and linear-attention layers
    (Mistral, Gemma 3, Qwen3.5 / Qwen3-Next: their masks and recurrent states are not the causal
    full attention the hooks rebuild), and attention without ``q_proj`` / ``k_proj``.
    """
    text = getattr(model.config, "text_config", None) or model.config
    kind = getattr(text, "model_type", type(layers[0]).__name__)
    attns = [getattr(layer, "self_attn", None) for layer in layers]
    types = sorted({t for t in (getattr(text, "layer_types", None) or ()) if t != "full_attention"})
    if not types and getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
        types = ["sliding_attention"]
    if types:
        raise TypeError(f"{name} cannot run on this {kind} language model yet: it has {' and '.join(types)} layers, "
                        "whose masks or recurrent state the in-LLM hooks do not rebuild (only full causal "
                        "attention is supported); prune before the language model instead (e.g. scorer='atp' or 'cls')")
    if any(a is None or not all(hasattr(a, n) for n in ("q_proj", "k_proj")) for a in attns):
        raise TypeError(f"{name} cannot run on this {kind} language model: its layers have no self_attn.q_proj / "
                        "k_proj to recompute the ranking from")
    if any(getattr(a, "q_norm", None) is not None or getattr(a, "k_norm", None) is not None for a in attns):
        raise TypeError(f"{name} cannot run on this {kind} language model yet: its attention normalises q and k "
                        "(QK-norm), which the recomputed q/k do not apply; prune before the language model "
                        "instead (e.g. scorer='atp' or 'cls')")


def language_model(model: nn.Module) -> nn.Module | None:
    """The decoder stack: ``model.model.language_model`` (LLaVA, Qwen, Gemma 3) or
    ``model.model.text_model`` (Idefics3, SmolVLM); None elsewhere (BLIP-2 has no ``model.model``)."""
    inner = getattr(model, "model", None)
    return getattr(inner, "language_model", None) or getattr(inner, "text_model", None)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    lm = language_model(model)
    layers = getattr(lm, "layers", None) if lm is not None else None
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"in-LLM pruning needs model.model.language_model.layers, not found on {type(model).__name__}")
    return layers


def final_norm(model: nn.Module) -> nn.Module:
    """The language model's final norm (the one before the LM head)."""
    return language_model(model).norm


def rotary_keys(attn: nn.Module, hidden: torch.Tensor, cos_sin) -> torch.Tensor:
    """``[B, H_kv, L, D]``: the layer's keys with its rotary terms applied (what its KV cache holds)."""
    rotary = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb")
    b, length, _ = hidden.shape
    k = attn.k_proj(hidden).view(b, length, -1, attn.head_dim).transpose(1, 2)
    _, k = rotary(k, k, *cos_sin)
    return k


def last_token_attention(attn: nn.Module, hidden: torch.Tensor, cos_sin, key_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: attention of the last position's query to every key, heads averaged."""
    rotary = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb")
    b = hidden.shape[0]
    hd = attn.head_dim
    q = attn.q_proj(hidden[:, -1:]).view(b, 1, -1, hd).transpose(1, 2)
    cos, sin = cos_sin
    q, _ = rotary(q, q, cos[..., -1:, :], sin[..., -1:, :])
    k = rotary_keys(attn, hidden, cos_sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q.float() @ k.float().transpose(-1, -2))[:, :, 0] * attn.scaling  # [B, H, L]
    logits = logits.masked_fill(~key_mask[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1).mean(1)


@dataclass
class StageView:
    """What a scorer sees at one stage (prefill, the un-expanded batch, the current shortened layout).

    ``hidden``: ``[B, W]`` input of the stage layer; ``prev_input`` / ``cos_sin``: the normalised
    input and rotary terms of the layer before's attention (same layout); ``valid``: ``[B, W]`` real
    positions; ``slot_token``: ``[B, W]`` each position's image token as a flat id (``-1`` for text
    and padding); ``alive``: ``[I, N]`` image tokens still present. ``memo`` persists across the
    stages of one call.
    """

    model: nn.Module
    state: Any
    ctx: ScoreContext
    layer: int
    hidden: torch.Tensor
    prev_input: torch.Tensor
    cos_sin: tuple
    valid: torch.Tensor
    slot_token: torch.Tensor
    alive: torch.Tensor
    token_image: torch.Tensor
    token_index: torch.Tensor
    memo: dict = field(default_factory=dict)

    def image_scores(self, row: torch.Tensor) -> torch.Tensor:
        """``[B, W]`` values per position -> ``[I, N]`` per image token (``-inf`` where not present)."""
        out = torch.full(self.ctx.valid.shape, float("-inf"), device=row.device)
        where = self.valid & (self.slot_token >= 0)
        g = self.slot_token[where]
        out[self.token_image[g], self.token_index[g]] = row[where].float()
        return out

    def positions(self) -> torch.Tensor:
        """``[I, N]`` the position (in ``hidden``'s layout) of each present image token, ``-1`` else."""
        out = torch.full(self.ctx.valid.shape, -1, dtype=torch.long, device=self.valid.device)
        where = self.valid & (self.slot_token >= 0)
        g = self.slot_token[where]
        out[self.token_image[g], self.token_index[g]] = where.nonzero(as_tuple=True)[1]
        return out

    def image_rows(self) -> torch.Tensor:
        """``[I]`` the batch row each image sits in (``-1`` for an image with no token present)."""
        out = torch.full(self.ctx.valid.shape[:1], -1, dtype=torch.long, device=self.valid.device)
        where = self.valid & (self.slot_token >= 0)
        g = self.slot_token[where]
        out[self.token_image[g]] = where.nonzero(as_tuple=True)[0]
        return out


def kept_mask(kept: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Kept indices per image -> ``[I, N]`` bool."""
    out = torch.zeros(like.shape, dtype=torch.bool, device=like.device)
    for i, idx in enumerate(kept):
        out[i, idx.to(out.device)] = True
    return out


@contextmanager
def pruning_hooks(model: nn.Module, state: Any, sel: Any, ctx: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Hooks that drop image tokens inside the language model during one call; fill ``sel.kept``.

    Rows may keep different numbers of tokens (per-image budgets): the shortened rows are
    left-padded with copies of their first kept position that no query may attend to (each
    attends only to itself, so nothing is NaN), with a 4-D mask built for the new layout.
    Beam search expands the batch before prefill; the selection is made once per sample.
    """
    scorer = state.scorer
    layers = decoder_layers(model)
    stage_layers = list(scorer.stage_layers(state.config, len(layers)))
    key_mask = attention_mask.bool()
    lengths = [f.shape[0] for f in sel.encoded.features]
    full = input_ids.shape[1]
    device = input_ids.device
    # the flat id of each visual token in the prompt: entries are all images, then all videos (one kind
    # after the other, Encoded.modalities), and each kind's features fill its own placeholders in row-major order
    slot_token = torch.full(input_ids.shape, -1, dtype=torch.long, device=device)
    first = 0
    for kind, token_id in state.adapter.visual_tokens(model).items():
        rows, cols = (input_ids == token_id).nonzero(as_tuple=True)
        slot_token[rows, cols] = first + torch.arange(rows.shape[0], device=device)
        first += rows.shape[0]
    token_image = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(lengths)]).to(device)
    token_index = torch.cat([torch.arange(n) for n in lengths]).to(device)
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    plan: dict[str, Any] = {"stages": [], "memo": {}, "alive": ctx.valid.clone()}
    stage_of = {}
    for s, layer in enumerate(stage_layers):
        for j in range(layer, stage_layers[s + 1] if s + 1 < len(stage_layers) else len(layers)):
            stage_of[j] = s

    def record(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if len(plan["stages"]) >= len(stage_layers):  # decoding, or every stage decided
            return None
        plan["record"] = (hidden, kwargs["position_embeddings"])
        return None

    def rank(stage: int, hidden: torch.Tensor, pos_ids: Any) -> None:
        """Decide stage ``stage`` at prefill from the current layout; append its layout to the plan."""
        prev_hidden, pos = plan.pop("record")
        if plan["stages"]:
            index, valid = plan["stages"][-1]
        else:
            index = torch.arange(full, device=device).expand(hidden.shape[0], -1)
            valid = key_mask.repeat_interleave(hidden.shape[0] // input_ids.shape[0], dim=0)
        expand = hidden.shape[0] // input_ids.shape[0]
        with torch.no_grad():
            cur = index[::expand]
            view = StageView(
                model=model, state=state, ctx=ctx, layer=stage_layers[stage], hidden=hidden[::expand],
                prev_input=prev_hidden[::expand],
                cos_sin=tuple(t[::expand] if t.shape[0] == hidden.shape[0] else t for t in pos),
                valid=valid[::expand], slot_token=slot_token.gather(1, cur), alive=plan["alive"],
                token_image=token_image, token_index=token_index, memo=plan["memo"])
            keep_img, scores = scorer.choose(stage, view)
            keep_img = keep_img & plan["alive"]
            plan["alive"] = keep_img
            if scores is not None and getattr(sel, "scores", None) is None:
                sel.scores = scores
            flat = torch.zeros(token_image.shape[0], dtype=torch.bool, device=device)
            for i, n in enumerate(lengths):
                flat[starts[i] : starts[i] + n] = keep_img[i, :n].to(device)
            st = view.slot_token
            keep = view.valid & ((st < 0) | flat[st.clamp_min(0)])
            keep = keep.repeat_interleave(expand, dim=0)
            counts = keep.sum(1)
            width = int(counts.max())
            # each row's kept positions, ascending, left-padded with copies of its first one
            order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
            slot = torch.arange(width, device=keep.device)
            pad = (width - counts).unsqueeze(1)
            rel = order.gather(1, (slot - pad).clamp_min(0))
            plan["stages"].append((index.gather(1, rel), slot >= pad))
            plan["rel"] = rel
            if scorer.compact_positions and not state.adapter.multi_axis_positions \
                    and isinstance(pos_ids, torch.Tensor) and pos_ids.dim() == 2:
                index, valid = plan["stages"][-1]
                original = pos_ids.expand(index.shape[0], -1)
                first = valid.to(torch.uint8).argmax(1, keepdim=True)
                base = original.gather(1, index.gather(1, first))  # the first kept token keeps its position
                compact = base + (valid.cumsum(1) - 1).clamp_min(0)
                plan.setdefault("compact", {})[stage] = (compact, original[:, -1:] - compact[:, -1:])
        if stage == len(stage_layers) - 1:
            alive = plan["alive"]
            sel.kept = [alive[i, :n].nonzero().flatten() for i, n in enumerate(lengths)]

    def shorten(module, args, kwargs):
        j = module_index[id(module)]
        s = stage_of[j]
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        prefill = kwargs["position_embeddings"][0].shape[-2] == full
        if prefill and j == stage_layers[s] and len(plan["stages"]) == s and "record" in plan:
            rank(s, hidden, kwargs.get("position_ids"))
        if len(plan["stages"]) <= s:
            return None
        index, valid = plan["stages"][s]
        mask = kwargs.get("attention_mask")
        q_len = hidden.shape[1]
        if prefill:  # drop the pruned positions everywhere
            if j == stage_layers[s]:  # the stage layer; later layers get the already shortened output of the one before
                hidden = _take(hidden, plan["rel"], 1)
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
        compact = plan.get("compact", {}).get(s)
        if compact is not None:  # numbered afresh: positions and rotary terms recomputed
            pos = compact[0] if prefill else kwargs["position_ids"].expand(hidden.shape[0], -1) - compact[1]
            kwargs["position_ids"] = pos
            kwargs["position_embeddings"] = language_model(model).rotary_emb(hidden, pos)
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
        return args, kwargs

    module_index = {id(layer): j for j, layer in enumerate(layers)}
    handles = [layers[layer - 1].self_attn.register_forward_pre_hook(this_thread(record), with_kwargs=True)
               for layer in stage_layers]
    handles += [layers[j].register_forward_pre_hook(this_thread(shorten), with_kwargs=True)
                for j in range(stage_layers[0], len(layers))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _allowed_mask(allowed: torch.Tensor, like: torch.Tensor | None, attn: nn.Module) -> torch.Tensor:
    """A 4-D mask in the form the attention implementation expects (bool for SDPA, additive for eager)."""
    impl = getattr(attn.config, "_attn_implementation", "sdpa")
    if impl == "eager" or (like is not None and like.dtype.is_floating_point):
        dtype = like.dtype if like is not None and like.dtype.is_floating_point else attn.q_proj.weight.dtype
        out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return out.masked_fill(~allowed, torch.finfo(dtype).min)
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"in-LLM pruning supports sdpa and eager attention, not {impl!r}")
    return allowed


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
