"""The one timing loop of ``visprune bench``, ``visprune eval`` and the viewer: wall-clock seconds of a
call (waiting for a CUDA device's queue on both sides), calls taken in turns after warm-up rounds."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def sync(device: Any) -> None:
    """Wait for ``device``'s queued work (a no-op off CUDA)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any = None) -> float:
    """Seconds ``fn()`` takes, the device's queue drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def in_turns(calls: Sequence[Callable[[], T]], repeats: int, warmup: int = 0,
             on_round: Callable[[int, bool], None] | None = None) -> list[list[T]]:
    """Every call once per round, ``warmup`` discarded rounds then ``repeats`` kept ones: what each call
    returned in the kept rounds. Taking the calls in turns spreads a load that drifts over the run
    (other processes on a shared CPU, clocks warming up) over all of them instead of the first.
    ``on_round(i, warm_up)`` is told of each finished round."""
    kept: list[list[T]] = [[] for _ in calls]
    for i in range(warmup + repeats):
        for call, out in zip(calls, kept):
            value = call()
            if i >= warmup:
                out.append(value)
        if on_round is not None:
            on_round(i, i < warmup)
    return kept
