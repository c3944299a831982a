"""Pure tensor operations: scores -> budgets -> kept indices.

Nothing here knows about models. Every other layer (adapters, FLOPs accounting, pictures) works
from the indices these functions return, so a selection is computed once and used everywhere.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "energy_budget",
    "keep_indices",
    "topk_mask",
    "mask_indices",
    "normalize",
    "cls_attention",
    "received_attention",
    "pad_ragged",
    "ratio_budget",
    "to_device",
]

# Energy shares are compared with this slack so that a rank-r matrix asked for energy 1.0 keeps r
# tokens, not N: the trailing squared singular values of a float32 matrix are ~1e-14 of the total.
_ENERGY_TOL = 1e-9


def energy_budget(features: torch.Tensor, energy: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample token budget from the singular-value spectrum (E-AdaPrune).

    For each sample's feature matrix ``X`` (``N x D``, not centred) with singular values
    ``s_1 >= s_2 >= ...`` this returns the smallest ``k`` with
    ``sum_{j<=k} s_j^2 / sum_j s_j^2 >= energy``.

    The squared singular values are the eigenvalues of the Gram matrix (``X^T X`` or ``X X^T``,
    whichever is smaller), computed in float64: exact up to rounding and much cheaper than an SVD
    when ``N`` and ``D`` differ.

    Args:
        features: ``[B, N, D]``.
        energy: ``tau`` in ``(0, 1]``.
        valid: optional ``[B, N]`` bool mask of real rows (ragged batches padded with anything);
            invalid rows are zeroed, which leaves the non-zero spectrum unchanged.

    Returns:
        ``LongTensor[B]`` with values in ``[1, N]`` (an all-zero matrix gets 1).
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [B, N, D], got shape {tuple(features.shape)}")
    if not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    x = features.detach().to(torch.float64)
    if valid is not None:
        x = x * valid.to(x.device, torch.bool).unsqueeze(-1)
    n, d = x.shape[1], x.shape[2]
    gram = x.transpose(1, 2) @ x if d <= n else x @ x.transpose(1, 2)
    eig = torch.linalg.eigvalsh(gram).clamp_min(0).flip(-1)  # descending
    total = eig.sum(-1, keepdim=True)
    share = eig.cumsum(-1) / total.clamp_min(torch.finfo(torch.float64).tiny)
    reached = share >= (float(energy) - _ENERGY_TOL)
    k = reached.to(torch.int64).argmax(-1) + 1  # first index reaching the share
    k = torch.where(total.squeeze(-1) > 0, k, torch.ones_like(k))
    return k.clamp(max=n)


def ratio_budget(counts: torch.Tensor | int, keep: float) -> torch.Tensor:
    """``round(keep * n)`` per sample, at least 1 and at most ``n``.

    Rounded as Python's ``round`` rounds a float: in double precision, halves to the even integer
    (``0.25 * 10 = 2.5`` keeps 2). That is how DivPrune's official code counts the tokens it keeps
    (``vbdi/divprune``, ``LLaVA/llava/model/llava_arch.py``, ``DivPrune``:
    ``int(round(threshold_ratio * image_feature_length))``), so ``divprune:keep=...`` keeps what it
    keeps, and every ratio budget rounds the same way."""
    counts = torch.as_tensor(counts)
    k = torch.round(counts.to(torch.float64) * float(keep)).to(torch.int64)  # torch.round: half to even
    return torch.minimum(k.clamp_min(1), counts.to(torch.int64))


def temporal_repeats(features: torch.Tensor, thw: tuple[int, int, int], tau: float) -> torch.Tensor:
    """``[N]`` bool: the tokens of a video that repeat the one at the same place before them.

    ``features`` is ``[N, D]``, ``N = t * h * w`` tokens in ``(t, h, w)`` row-major order (temporal group
    by group). A token of group ``t > 0`` is a repeat when its cosine similarity to the *anchor* at its
    place ``(h, w)`` is ``>= tau`` (or it equals it exactly); the anchor is the last group's token at that
    place that was not a repeat, so a slow drift is still caught once it has drifted far enough, rather
    than every step passing against its near-identical predecessor. Group 0 is never a repeat.
    """
    t, h, w = thw
    if features.shape[0] != t * h * w:
        raise ValueError(f"a video of grid (t, h, w) = {thw} has {t * h * w} tokens, got {features.shape[0]}")
    groups = features.detach().float().reshape(t, h * w, -1)
    unit = torch.nn.functional.normalize(groups, dim=-1)
    repeats = torch.zeros(t, h * w, dtype=torch.bool, device=features.device)
    anchor, anchor_unit = groups[0], unit[0]
    for i in range(1, t):
        same = ((unit[i] * anchor_unit).sum(-1) >= tau) | (groups[i] == anchor).all(-1)
        repeats[i] = same
        anchor = torch.where(same[:, None], anchor, groups[i])
        anchor_unit = torch.where(same[:, None], anchor_unit, unit[i])
    return repeats.reshape(-1)


def apportion(k: int, weights: list[float], caps: list[int]) -> list[int]:
    """``k`` split into integer parts in proportion to ``weights``, each part at most its cap, the parts
    summing to ``min(k, sum(caps))`` (largest remainders).

    A part whose proportional quota reaches its cap gets the cap, and the rest is shared again among the
    others in proportion to their weights, until no quota passes its cap; then every part takes the floor
    of its quota and the units left go one each to the largest fractional remainders (ties: the earlier
    part). Parts with a cap of 0 get nothing; where every open part weighs 0 they share equally.
    """
    if len(weights) != len(caps):
        raise ValueError(f"{len(weights)} weights for {len(caps)} caps")
    out = [0] * len(caps)
    left = min(int(k), sum(caps))
    open_ = [g for g, c in enumerate(caps) if c > 0]
    while left > 0 and open_:
        w = [max(float(weights[g]), 0.0) for g in open_]
        if sum(w) <= 0:
            w = [1.0] * len(open_)
        quota = [left * x / sum(w) for x in w]
        full = [g for g, q in zip(open_, quota) if q >= caps[g]]
        if full:
            for g in full:
                out[g] = caps[g]
                left -= caps[g]
            open_ = [g for g in open_ if g not in full]
            continue
        floors = [math.floor(q) for q in quota]
        for g, f in zip(open_, floors):
            out[g] = f
        rest = left - sum(floors)
        order = sorted(range(len(open_)), key=lambda j: (-(quota[j] - floors[j]), j))
        for j in order[:rest]:
            out[open_[j]] += 1
        left = 0
    return out


def keep_indices(scores: torch.Tensor, k: torch.Tensor | int | list[int]) -> list[torch.Tensor]:
    """Top-``k`` token indices of each row, in ascending (original) order.

    Ties are broken by the lower index; NaN scores rank last; ``-inf`` marks padding and is only
    chosen when ``k`` exceeds the number of finite scores. ``k`` larger than ``N`` keeps everything.

    Args:
        scores: ``[B, N]``.
        k: ``[B]`` (or an int for every row).

    Returns:
        a list of ``B`` ascending ``LongTensor``s, row ``b`` of length ``min(k[b], N)``.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    b, n = scores.shape
    if isinstance(k, int):
        k = torch.full((b,), k, dtype=torch.int64)
    k = torch.as_tensor(k, dtype=torch.int64).reshape(-1)
    if k.numel() != b:
        raise ValueError(f"k has {k.numel()} entries for {b} rows of scores")
    kk = k.clamp(0, n)
    return mask_indices(topk_mask(scores, kk), kk.tolist())


def topk_mask(scores: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """``[B, N]`` bool: the top-``k[b]`` entries of each row, with :func:`keep_indices`' rules
    (ties to the lower index, NaN last, ``-inf`` only when ``k`` exceeds the finite scores).

    ``k`` may stay on the scores' device: nothing is read back to the host, so a GPU never waits.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    b, n = scores.shape
    k = torch.as_tensor(k, dtype=torch.int64, device=scores.device).reshape(-1)
    if k.numel() == 1 and b != 1:
        k = k.expand(b)
    if k.numel() != b:
        raise ValueError(f"k has {k.numel()} entries for {b} rows of scores")
    s = torch.nan_to_num(scores.detach().float(), nan=-math.inf)
    # A stable descending sort keeps equal scores in index order, so ties go to the lower index.
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=scores.device).expand(b, n))
    return rank < k.unsqueeze(-1)


def topk_mask_grouped(scores: torch.Tensor, groups: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` bool: in each row, the top-``k[b, g]`` entries among the entries of group ``g``, for every
    group (:func:`topk_mask`'s rules within each group); ``groups`` is ``[B, N]`` in ``[0, G)``, ``k``
    ``[B, G]``. Stays on the device."""
    b, n = scores.shape
    g = k.shape[1]
    member = groups.unsqueeze(1) == torch.arange(g, device=groups.device).view(1, g, 1)  # [B, G, N]
    s = torch.where(member, scores.float().unsqueeze(1), torch.full((), -math.inf, device=scores.device))
    keep = topk_mask(s.reshape(b * g, n), k.to(scores.device, torch.int64).reshape(-1)).reshape(b, g, n)
    return (keep & member).any(1)


def mask_indices(mask: torch.Tensor, sizes: list[int] | None = None) -> list[torch.Tensor]:
    """The ``True`` positions of each row of a ``[B, N]`` mask, ascending, one tensor per row.

    ``sizes`` (the row sums, known on the host) makes this free of host-device synchronisation:
    one stable sort, then views. Without it the row sums are read back once.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, N], got shape {tuple(mask.shape)}")
    if sizes is None:
        sizes = mask.sum(-1).tolist()
    if len(sizes) != mask.shape[0]:
        raise ValueError(f"sizes has {len(sizes)} entries for {mask.shape[0]} rows")
    order = torch.argsort((~mask).to(torch.uint8), dim=-1, stable=True)  # kept first, in index order
    return [order[i, : int(sizes[i])] for i in range(mask.shape[0])]


def normalize(scores: torch.Tensor, method: str = "minmax", valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample normalisation that puts different score terms on one scale.

    ``minmax`` maps each row to ``[0, 1]``; ``softmax`` turns it into a distribution; ``rank``
    replaces scores by their rank in ``[0, 1]``; ``none`` returns the scores unchanged. Entries
    outside ``valid`` are ignored and come back as ``-inf``.
    """
    s = scores.float()
    if valid is None:
        valid = torch.ones_like(s, dtype=torch.bool)
    if method == "none":
        out = s.clone()
    elif method == "minmax":
        lo = torch.where(valid, s, torch.full_like(s, math.inf)).amin(-1, keepdim=True)
        hi = torch.where(valid, s, torch.full_like(s, -math.inf)).amax(-1, keepdim=True)
        out = (s - lo) / (hi - lo).clamp_min(1e-12)
    elif method == "softmax":
        out = torch.softmax(torch.where(valid, s, torch.full_like(s, -math.inf)), dim=-1)
    elif method == "rank":
        filled = torch.where(valid, s, torch.full_like(s, -math.inf))
        ranks = filled.argsort(dim=-1, stable=True).argsort(dim=-1, stable=True).float()
        n_valid = valid.sum(-1, keepdim=True).clamp_min(2).float()
        out = (ranks - (s.shape[-1] - n_valid)) / (n_valid - 1)
    else:
        raise ValueError(f"unknown normalisation {method!r}; valid: minmax, softmax, rank, none")
    return torch.where(valid, out, torch.full_like(out, -math.inf))


def _attention_probs(q: torch.Tensor, k: torch.Tensor, num_heads: int, scale: float, rows: slice) -> torch.Tensor:
    bsz, t, dim = k.shape
    hd = dim // num_heads
    qh = q[:, rows].reshape(bsz, -1, num_heads, hd).transpose(1, 2).float()  # [B, H, R, hd]
    kh = k.reshape(bsz, t, num_heads, hd).transpose(1, 2).float()  # [B, H, T, hd]
    return torch.softmax((qh @ kh.transpose(-1, -2)) * scale, dim=-1)  # [B, H, R, T]


def cls_attention(q: torch.Tensor, k: torch.Tensor, num_heads: int, scale: float | None = None) -> torch.Tensor:
    """Attention of the [CLS] query (token 0) to every token, heads averaged.

    Recomputes one row of the attention matrix from the layer's query/key projections, O(T*D),
    so the tower itself can keep running on SDPA / FlashAttention.

    Args:
        q, k: ``[B, T, H*hd]`` outputs of the layer's ``q_proj`` / ``k_proj``.
        num_heads: ``H``.
        scale: softmax scale, ``hd ** -0.5`` by default.

    Returns:
        ``[B, T]``: the row ``softmax(q_0 k^T * scale)`` averaged over heads (column 0 is [CLS]
        to itself).
    """
    hd = q.shape[-1] // num_heads
    scale = hd**-0.5 if scale is None else scale
    return _attention_probs(q, k, num_heads, scale, slice(0, 1))[:, :, 0].mean(1)


def received_attention(q: torch.Tensor, k: torch.Tensor, num_heads: int, scale: float | None = None,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention each token receives from all queries, heads averaged: ``[B, T]``.

    The saliency for towers without a [CLS] token (SigLIP, Qwen2-VL): the token every query looks
    at is the one a [CLS] query would look at too. Costs O(T^2 * D) for the one layer only.
    ``valid`` (``[B, T]`` bool): padding tokens the tower masks as keys (Idefics3's padded
    patches); they receive nothing, and the mean is over the valid queries only.
    """
    hd = q.shape[-1] // num_heads
    scale = hd**-0.5 if scale is None else scale
    if valid is None:
        return _attention_probs(q, k, num_heads, scale, slice(None)).mean(dim=(1, 2))
    bsz, t, dim = k.shape
    qh = q.reshape(bsz, t, num_heads, hd).transpose(1, 2).float()
    kh = k.reshape(bsz, t, num_heads, hd).transpose(1, 2).float()
    logits = ((qh @ kh.transpose(-1, -2)) * scale).masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(logits, dim=-1).mean(1)  # [B, T queries, T keys]
    weights = valid.float() / valid.sum(-1, keepdim=True).clamp(min=1)
    return (weights.unsqueeze(-1) * probs).sum(1)


def pad_ragged(rows: list[torch.Tensor], value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack tensors ``[n_i, ...]`` into ``[B, max n, ...]`` (right padding) and a ``[B, max n]`` mask."""
    if not rows:
        raise ValueError("pad_ragged needs at least one row")
    n = max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), n, *rows[0].shape[1:]), value)
    mask = torch.zeros(len(rows), n, dtype=torch.bool, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = True
    return out, mask


def to_device(host: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A host tensor on ``device`` without making the host wait for it.

    A plain ``.to("cuda")`` from pageable host memory waits for the stream (a synchronisation,
    which ``torch.cuda.set_sync_debug_mode`` reports); from pinned memory with ``non_blocking``
    the copy is queued like a kernel. Elsewhere this is ``.to(device)``.
    """
    device = torch.device(device)
    if device.type != "cuda" or host.device.type != "cpu":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
