"""Confidence intervals for accuracies and paired differences: percentile bootstrap over samples.

Two methods are compared on the samples both answered (paired), so the interval reflects how much
the difference moves with the choice of questions, not the spread of each accuracy alone. A
difference whose interval contains 0 is a tie: the two methods are not ranked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
DESCRIPTION = (f"percentile bootstrap over samples, {RESAMPLES} resamples, {LEVEL:.0%} intervals, seed {SEED}; "
               "differences are paired on the samples both methods answered; an interval containing 0 is a tie")


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def mean_ci(scores: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL,
            seed: int = SEED) -> list[float] | None:
    """``[low, high]`` of the mean of ``scores`` (None for fewer than 2 samples)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size < 2:
        return None
    means = x[_indices(x.size, resamples, seed)].mean(axis=1)
    tail = (1 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def paired_difference(a: dict[str, float], b: dict[str, float], resamples: int = RESAMPLES, level: float = LEVEL,
                      seed: int = SEED) -> dict | None:
    """``mean(a - b)`` over the samples in both (by id), its interval and whether it is a tie."""
    ids = [i for i in a if i in b]
    if len(ids) < 2:
        return None
    d = [a[i] - b[i] for i in ids]
    ci = mean_ci(d, resamples, level, seed)
    return {"diff": float(np.mean(d)), "ci": ci, "n": len(ids), "tie": bool(ci[0] <= 0.0 <= ci[1])}
