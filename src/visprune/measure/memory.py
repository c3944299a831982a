"""Memory of one prefill: peak bytes of tensors it creates (weights excluded) and its KV cache.

Device-agnostic: on CUDA the allocator's peak above the weights; elsewhere a dispatch mode that
tracks the storage every op creates and frees. Used by ``visprune bench`` and ``visprune eval``.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..compat import output_cache


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storage created while active (weights and inputs excluded).

    Each op's outputs are tracked by storage; a storage is released when the last tracked tensor
    using it is freed. This measures activations and the KV cache on any device.
    """

    def __init__(self, known: list[torch.Tensor]):
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in known}
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            ptr = t.untyped_storage().data_ptr()
            if ptr == 0 or ptr in self.known:
                continue
            entry = self.live.get(ptr)
            if entry is None:
                entry = self.live[ptr] = [t.untyped_storage().nbytes(), 0]
                self.current += entry[0]
                self.peak = max(self.peak, self.current)
            entry[1] += 1
            weakref.finalize(t, self._release, ptr)
        return out



def cache_bytes(cache) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total



@torch.no_grad()
def prefill_memory(model, inputs, device: torch.device) -> tuple[int, int]:
    """(peak bytes created during one prefill, KV-cache bytes after it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = model(**inputs, use_cache=True)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return peak, cache_bytes(output_cache(out))
    known = [*model.parameters(), *model.buffers(), *[v for v in inputs.values() if isinstance(v, torch.Tensor)]]
    with LiveBytes(known) as tracker:
        out = model(**inputs, use_cache=True)
    return tracker.peak, cache_bytes(output_cache(out))
