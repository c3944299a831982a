"""``dart``: DART, duplication-aware pruning inside the language model (pivots by key norm, keep the
tokens least similar to them)."""

from __future__ import annotations

import sys
from typing import Any

import torch

from .base import register_scorer
from .llm_pruning import InLLMScorer, StageView, decoder_layers, final_norm, rotary_keys


@register_scorer("dart")
class DartScorer(InLLMScorer):
    """DART (Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models:
    Duplication Matters More", arXiv 2502.11494). Follows the official code,
    github.com/ZichenWen1/DART: ``llava/model/language_model/modeling_llama_self.py``,
    ``get_retained_image_token`` and ``DART_K_norm.forward`` (the same selection as
    ``Qwen2-VL/Qwen2VL_DART/modeling_qwen2_vl_self.py``, ``DART.get_retained_image_token``). The
    official repository cannot be fetched here; it was read from a public copy of it
    (xqy1111111/DART), and a second implementation, ModelTC/llmc's
    ``llmc/compression/token_reduction/dart.py`` ``get_retained_image_token``, selects the same (the
    same pivots, the same per-pivot ``TOKEN_TOPK`` picks, text pivots dropped at the end).

    Before layer ``K = PruneConfig.llm_layer`` (default 2, the official ``K``) runs:

    - pivots: the ``pivot_image`` image tokens and the ``pivot_text`` tokens after the image (the
      official "query" tokens) with the largest L1 norm of their layer ``K-1`` keys (rotary
      applied, kv heads repeated: the official ``K_states``);
    - for each pivot in turn, the image tokens least cosine-similar to it (on the layer ``K-1``
      output passed through the language model's final norm, the official ``last_layer_state``)
      are kept and leave the pool, so later pivots never pick them again;
    - the image pivots are kept, the text pivots only pick. Layers ``K`` and up see the kept image
      tokens (their KV cache holds only those). No attention map: SDPA / FlashAttention stay.

    Budget: ``k`` (from ``keep`` / ``k`` / ``energy`` / ``iqr``; the budget reads the key L1 norms,
    which are also ``last_selection(model).scores``) is the number of image tokens kept, pivots
    included: ``min(pivot_image, k)`` pivots, then ``k`` minus those split among all pivots. The
    official ``max_num_trunction=128`` with 4 + 4 pivots (16 per pivot) is ``k=132``.

    Pivots are visited in the official order (the iteration order of a Python set of their
    positions in the unpadded sequence). Deliberate deviation, for exact budgets: when ``k`` minus
    the image pivots is not a multiple of the pivot count, the first pivots visited pick one more
    each (the official ``TOKEN_TOPK`` rounds down); with fewer than ``pivot_text`` tokens after the
    image, the ones there are the text pivots (the official code would fail). The key norms are
    taken at each row's unpadded rotary positions (the official code runs one sample at a time;
    left padding shifts RoPE, which leaves attention alone but changes L1 norms), so a batch keeps
    what single runs keep.

    Args:
        pivot_image, pivot_text: pivot counts (official defaults 4 and 4).
    """

    def __init__(self, pivot_image: int = 4, pivot_text: int = 4) -> None:
        for name, v in (("pivot_image", pivot_image), ("pivot_text", pivot_text)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if pivot_image + pivot_text < 1:
            raise ValueError("dart needs at least one pivot")
        self.pivot_image, self.pivot_text = pivot_image, pivot_text

    def stage_layers(self, config: Any, n_layers: int) -> list[int]:
        if config.llm_layer >= n_layers:
            raise ValueError(f"llm_layer={config.llm_layer} but the language model has {n_layers} layers")
        return [config.llm_layer]

    def choose(self, stage: int, view: StageView) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = view.ctx
        attn = decoder_layers(view.model)[view.layer - 1].self_attn
        keys = rotary_keys(attn, view.prev_input, view.cos_sin)
        keys = _unpadded(attn, keys, view.cos_sin, view.valid)
        keys = keys.repeat_interleave(getattr(attn, "num_key_value_groups", 1), dim=1)
        knorm = keys.float().abs().sum(dim=(1, 3))  # [B, W]: the L1 norm over every head
        states = final_norm(view.model)(view.hidden).float()
        scores = view.image_scores(knorm)
        counts = ctx.counts.to(torch.int64)
        budget = torch.minimum(view.state.budget(ctx, scores).to(counts.device, torch.int64), counts).tolist()
        pos, rows = view.positions(), view.image_rows()
        pool_all = ctx.candidates & view.alive
        keep = ctx.protected.clone()
        for i in range(pos.shape[0]):
            b, k = int(rows[i]), int(budget[i])
            if b < 0 or k < 1:
                continue
            cand = pool_all[i] & (pos[i] >= 0)
            image_pos = pos[i][cand]
            n_img_piv = min(self.pivot_image, k, image_pos.shape[0])
            img_piv = image_pos[knorm[b, image_pos].topk(n_img_piv).indices]
            after = torch.arange(view.valid.shape[1], device=pos.device) > int(pos[i].max())
            text_pos = (view.valid[b] & (view.slot_token[b] < 0) & after).nonzero().flatten()
            txt_piv = text_pos[knorm[b, text_pos].topk(min(self.pivot_text, text_pos.shape[0])).indices]
            real = view.valid[b].nonzero().flatten()  # the official positions: in the unpadded sequence
            unpadded = {int(p): j for j, p in enumerate(real.tolist())}
            order = [int(real[j]) for j in set(unpadded[p] for p in img_piv.tolist() + txt_piv.tolist())]
            rest = k - n_img_piv
            quota = [rest // len(order) + (j < rest % len(order)) for j in range(len(order))]
            pool = torch.ones(image_pos.shape[0], dtype=torch.bool, device=pos.device)
            pool[torch.isin(image_pos, img_piv)] = False
            chosen = [img_piv]
            for p, q in zip(order, quota):
                if q == 0:
                    continue
                left = image_pos[pool]
                sim = torch.nn.functional.cosine_similarity(states[b, p][None], states[b, left], dim=-1)
                pick = left[(-sim).topk(q).indices]
                pool[torch.isin(image_pos, pick)] = False
                chosen.append(pick)
            picked = torch.cat(chosen)
            keep[i] |= torch.isin(pos[i], picked) & cand
        return keep, scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pivot_image={self.pivot_image!r}, pivot_text={self.pivot_text!r})"


def _unpadded(attn, keys: torch.Tensor, cos_sin, valid: torch.Tensor) -> torch.Tensor:
    """Keys rotated back by each row's first real position: the rotary positions of the unpadded
    sequence, which the official code (one sample at a time) sees. RoPE attention is unchanged by a
    shift, but the keys' L1 norms are not, and left padding shifts a row's positions on the LLaVA family."""
    rotary = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb")
    b = valid.shape[0]
    first = valid.to(torch.uint8).argmax(1)

    def at_first(t: torch.Tensor) -> torch.Tensor:
        t = t.expand(*t.shape[:-3], b, *t.shape[-2:])
        idx = first.view(*[1] * (t.dim() - 3), b, 1, 1).expand(*t.shape[:-3], b, 1, t.shape[-1])
        return torch.gather(t, t.dim() - 2, idx)

    cos, sin = (at_first(t) for t in cos_sin)
    _, keys = rotary(keys, keys, cos, -sin)
    return keys
