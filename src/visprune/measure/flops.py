"""Counted FLOPs with :class:`torch.utils.flop_counter.FlopCounterMode`.

The project reports the compute of a forward pass (prefill) as *counted* FLOPs:
every matmul / convolution / attention kernel that actually runs is counted
with torch's flop formulas (a multiply-add is 2 FLOPs; element-wise ops,
softmax and norms count as 0). Four things to know:

* **SDPA on CPU.** ``torch.nn.functional.scaled_dot_product_attention`` on CPU
  dispatches to ``aten._scaled_dot_product_flash_attention_for_cpu`` (and its
  ``_backward``), which torch's flop counter has no formula for, so attention
  silently counted as 0 (the tiny LLaVA in tests/test_flops.py reads
  12.6 instead of 15.2 MFLOP).
  :func:`register_sdpa_flop_formulas` registers the missing formulas (also for
  ``_scaled_dot_product_fused_attention_overrideable`` and
  ``_scaled_dot_product_attention_math_for_mps``), reusing torch's own
  ``sdpa_flop_count`` helpers, so an ``attn_implementation="sdpa"`` model
  counts exactly what the ``"eager"`` one does (``2*B*Hq*Lq*Lk*(Dqk + Dv)``
  FLOPs; causal masking is not discounted, as in torch's formulas).
  ``count_flops`` calls it for you. On the ``meta`` device, or with dropout,
  SDPA takes the math path, which decomposes into ``bmm`` ops that torch counts
  already.
* **Ops without a formula count 0.** Besides element-wise work, torch's counter has no
  formula for linear-algebra kernels such as ``torch.linalg.solve_triangular``, which the
  Gated DeltaNet layers of Qwen3.5 (transformers' ``torch_chunk_gated_delta_rule``, the path
  without the flash-linear-attention kernels) run twice per head and chunk of 64 tokens; the
  savings table gives their size beside the Qwen3.5 row (under 0.1% of its prefill).
* **Padding is counted.** FLOPs scale with the padded shape, so count one
  sample at a time (batch of 1, no padding).
* **Meta device.** A model built under ``with torch.device("meta"):`` has no
  weights but real shapes, and its forward can be counted at full size in well
  under a second without allocating memory (LLaVA-1.5-7B, 576 image tokens +
  40 text tokens: language model 8.18 TFLOP, lm_head 0.16, CLIP-L/336 tower
  0.38, projector 0.02). Put ``pixel_values`` on ``meta`` but keep
  ``input_ids`` a real CPU tensor: LLaVA checks the image-token count with
  ``.item()``, which meta tensors refuse. Plain language models also accept
  meta ``input_ids``. Meta and real runs give identical counts.

Example::

    from visprune.measure.flops import count_flops, count_flops_by_module

    with torch.no_grad():
        flops, out = count_flops(model, input_ids=ids, pixel_values=px)
        by_mod, out = count_flops_by_module(model, input_ids=ids, pixel_values=px)
    by_mod["model.vision_tower"], by_mod["model.multi_modal_projector"], by_mod["total"]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch.utils import flop_counter as _fc
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_flops_by_module", "register_sdpa_flop_formulas"]

_T = TypeVar("_T")

# ----------------------------------------------------------------------------
# SDPA flop formulas
# ----------------------------------------------------------------------------


def _bmm(b: int, m: int, k: int, n: int) -> int:
    return 2 * b * m * k * n


def _fallback_sdpa_flop_count(query_shape, key_shape, value_shape) -> int:
    """``softmax(Q K^T) V`` FLOPs; supports grouped-query attention (Hq = g*Hkv)."""
    b, h_q, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return _bmm(b * h_q, s_q, d_q, s_k) + _bmm(b * h_q, s_q, s_k, d_v)


def _fallback_sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape) -> int:
    """Backward of SDPA: recompute scores, then dV, dP, dQ, dK (5 bmm)."""
    b, h_q, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return (
        _bmm(b * h_q, s_q, d_q, s_k)  # recompute Q K^T
        + _bmm(b * h_q, s_q, d_v, s_k)  # dP = dO V^T
        + _bmm(b * h_q, s_k, s_q, d_v)  # dV = P^T dO
        + _bmm(b * h_q, s_q, s_k, d_q)  # dQ = dS K
        + _bmm(b * h_q, d_q, s_q, s_k)  # dK = dS^T Q
    )


# torch's own helpers (torch >= 2.1); they support GQA in recent versions.
_sdpa_fwd_count: Callable[..., int] = getattr(_fc, "sdpa_flop_count", _fallback_sdpa_flop_count)
_sdpa_bwd_count: Callable[..., int] = getattr(
    _fc, "sdpa_backward_flop_count", _fallback_sdpa_backward_flop_count
)


def _sdpa_forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    try:
        return int(_sdpa_fwd_count(query_shape, key_shape, value_shape))
    except AssertionError:  # older torch helpers reject GQA shapes
        return _fallback_sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward_flops(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    try:
        return int(_sdpa_bwd_count(grad_out_shape, query_shape, key_shape, value_shape))
    except AssertionError:
        return _fallback_sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# Ops whose first three tensor arguments are (query, key, value) of shape (B, H, L, D).
_FORWARD_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",  # CPU fused kernel (the one that matters here)
    "_scaled_dot_product_fused_attention_overrideable",  # out-of-tree backends (XPU, PrivateUse1)
    "_scaled_dot_product_attention_math_for_mps",  # MPS
)
# Ops whose first four tensor arguments are (grad_out, query, key, value).
_BACKWARD_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_fused_attention_overrideable_backward",
)

_register_lock = threading.Lock()
_registered: list[str] | None = None


def _aten_packet(name: str):
    try:
        return getattr(torch.ops.aten, name)
    except (AttributeError, RuntimeError):  # op absent from this torch build
        return None


def register_sdpa_flop_formulas() -> list[str]:
    """Register flop formulas for the SDPA kernels torch's flop counter misses.

    Idempotent and thread-safe: the work is done once per process; ops that
    already have a formula (in this or a future torch) are left alone, and ops
    absent from this torch build are skipped. Returns the names of the ops this
    module registered (the same list on every call).

    Must run before a ``FlopCounterMode`` is constructed, because the mode
    copies the global registry on construction; :func:`count_flops` and
    :func:`count_flops_by_module` take care of this.
    """
    global _registered
    with _register_lock:
        if _registered is not None:
            return list(_registered)
        added: list[str] = []
        for names, formula in ((_FORWARD_OPS, _sdpa_forward_flops), (_BACKWARD_OPS, _sdpa_backward_flops)):
            for name in names:
                packet = _aten_packet(name)
                if packet is None or packet in _fc.flop_registry:
                    continue
                _fc.register_flop_formula(packet)(formula)
                added.append(name)
        _registered = added
        return list(added)


# ----------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------


def _run_counted(fn: Callable[..., _T], args, kwargs) -> tuple[FlopCounterMode, _T]:
    register_sdpa_flop_formulas()
    counter = FlopCounterMode(display=False)
    with counter, _leaves_without_grad(fn):
        result = fn(*args, **kwargs)
    return counter, result


@contextmanager
def _leaves_without_grad(fn: Any):
    """Under ``no_grad``, ``fn``'s module's parameters do not require grad while it is counted.

    The counter's module tracker hooks the backward of every module input that requires grad, and
    fails on a parameter handed to a submodule as an input when grad is off (BLIP-2 passes its
    ``query_tokens`` to the Q-Former): "Expected gradient function to be set"."""
    module = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    if torch.is_grad_enabled() or not isinstance(module, torch.nn.Module):
        yield
        return
    frozen = [p for p in module.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def count_flops(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> tuple[int, _T]:
    """Run ``fn(*args, **kwargs)`` under ``FlopCounterMode`` and count its FLOPs.

    Returns ``(total_flops, result)`` where ``total_flops`` is an ``int``
    (multiply-add = 2 FLOPs) and ``result`` is whatever ``fn`` returned.
    Works with real tensors and with ``meta`` tensors (models built under
    ``torch.device("meta")``). Gradient mode is left to the caller; wrap the
    call in ``torch.no_grad()`` to count a forward only. If ``fn`` runs a
    backward pass, its FLOPs are included.
    """
    counter, result = _run_counted(fn, args, kwargs)
    return int(counter.get_total_flops()), result


def count_flops_by_module(
    fn: Callable[..., _T], /, *args: Any, **kwargs: Any
) -> tuple[dict[str, int], _T]:
    """Like :func:`count_flops`, but broken down by ``nn.Module``.

    Returns ``(flops_by_module, result)``. ``flops_by_module["total"]`` is the
    total count (equal to :func:`count_flops`); every other key is a module
    that ran inside ``fn`` and maps to the FLOPs counted while it (including
    its children) was executing, so nested keys overlap and do not sum to the
    total.

    Keys are the names ``root.named_modules()`` uses, relative to the
    outermost module that ran: for ``count_flops_by_module(llava, **inputs)``
    they are ``""`` (the whole model), ``"model.vision_tower"``,
    ``"model.multi_modal_projector"``, ``"model.language_model"``,
    ``"lm_head"``, ``"model.language_model.layers.0.self_attn"``, ... If
    ``fn`` runs several unrelated top-level modules, the names are instead
    prefixed with each top-level module's class name (torch's
    ``ModuleTracker`` names, e.g. ``"CLIPVisionModel.vision_model"``).
    Modules that ran but did no counted FLOPs are absent.
    """
    counter, result = _run_counted(fn, args, kwargs)
    raw = {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    total = raw.pop("Global", 0)
    roots = {name.split(".", 1)[0] for name in raw}
    out: dict[str, int] = {}
    if len(roots) == 1:
        for name, flops in raw.items():
            out[name.split(".", 1)[1] if "." in name else ""] = flops
    else:
        out.update(raw)
    out["total"] = int(total)
    return out, result
