"""Count the reads of tensor data back into Python: each one is a host-device sync on a GPU.

``.tolist()``, ``.item()``, ``.cpu()``, ``.numpy()`` are counted by wrapping the Tensor methods;
``int(t)`` / ``bool(t)`` (``_local_scalar_dense``), ``nonzero``, boolean indexing and the other
operators whose output size depends on the data are counted by a dispatch mode. Works on any
device, so the count of the pruning hot path is checked on CPU (tests) and reported by
``visprune bench``. Not thread-safe: the Tensor methods are patched while it is active.

On CUDA, :func:`count_cuda_syncs` asks the device itself: every operation that makes the host
wait for the stream, reads and blocking host-to-device copies alike (a copy from pageable host
memory waits too, which the read counter cannot see).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_METHODS = ("tolist", "item", "cpu", "numpy")
_DATA_DEPENDENT = frozenset({"nonzero", "masked_select", "_local_scalar_dense", "unique", "is_nonzero", "equal"})


class _DataDependentOps(TorchDispatchMode):
    def __init__(self, log: list[str]):
        super().__init__()
        self.log = log

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        indices = args[1] if name in ("index", "index_put", "index_put_") and len(args) > 1 else ()
        bool_index = isinstance(indices, (list, tuple)) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices
        )
        if name in _DATA_DEPENDENT or bool_index:
            self.log.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_reads() -> Iterator[list[str]]:
    """``with count_host_reads() as log: ...``: ``log`` lists each read by kind, in order."""
    log: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in _METHODS}

    def counted(name, fn):
        def method(self, *args, **kwargs):
            log.append(name)
            return fn(self, *args, **kwargs)

        return method

    for name, fn in originals.items():
        setattr(torch.Tensor, name, counted(name, fn))
    try:
        with _DataDependentOps(log):
            yield log
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


_SYNC_WARNING = "called a synchronizing CUDA operation"


@contextlib.contextmanager
def count_cuda_syncs() -> Iterator[list[str]]:
    """``with count_cuda_syncs() as log: ...``: after the block, ``log`` has one entry per
    synchronizing CUDA operation inside it (``torch.cuda.set_sync_debug_mode("warn")``, which
    PyTorch calls experimental: collectives and sparse ops are not covered). CUDA only.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("count_cuda_syncs needs CUDA; count_host_reads() works on any device")
    log: list[str] = []
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the same call site warns every time, not once
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield log
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    log.extend(str(w.message) for w in caught if _SYNC_WARNING in str(w.message))
