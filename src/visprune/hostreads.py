"""Count the reads of tensor data back into Python: each one is a host-device sync on a GPU.

``.tolist()``, ``.item()``, ``.cpu()``, ``.numpy()`` are counted by wrapping the Tensor methods;
``int(t)`` / ``bool(t)`` (``_local_scalar_dense``), ``nonzero``, boolean indexing and the other
operators whose output size depends on the data are counted by a dispatch mode. Works on any
device, so the count of the pruning hot path is checked on CPU (tests) and reported by
``visprune bench``. Not thread-safe: the Tensor methods are patched while it is active.
"""

from __future__ import annotations

import contextlib
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
