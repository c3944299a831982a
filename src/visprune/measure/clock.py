"""The clock for visprune's own work (its overhead), right on any device.

On CPU the host's clock times the work itself. On CUDA the host only queues kernels, so a host
clock around visprune's work would time the queueing, and then whatever the next read waits for,
the vision tower's kernels included. Inside ``synchronized()`` every reading first waits for the
device, so each window times the device work it holds. Each reading is then a sync: ``visprune
bench`` uses it only in extra runs that measure overhead, never in the runs it times for latency.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

import torch

_SYNCHRONIZED = contextvars.ContextVar("visprune_clock_synchronized", default=False)


def now() -> float:
    """``time.perf_counter()``, after the CUDA device finishes its queue when ``synchronized()``."""
    if _SYNCHRONIZED.get():
        torch.cuda.synchronize()
    return time.perf_counter()


@contextlib.contextmanager
def synchronized() -> Iterator[None]:
    """Within the block, :func:`now` waits for the CUDA device (a no-op without CUDA)."""
    token = _SYNCHRONIZED.set(torch.cuda.is_available())
    try:
        yield
    finally:
        _SYNCHRONIZED.reset(token)
