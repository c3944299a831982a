"""Corpus BLEU-4 as pycocoevalcap's ``Bleu(4)`` computes it, in pure Python.

Facts taken from ``pycocoevalcap/bleu/bleu.py`` and ``bleu_scorer.py`` (David
Chiang's scorer as modified by H. Fang and T.-Y. Lin,
https://github.com/tylin/coco-caption):

* per image: clipped n-gram matches ``correct_k = sum_g min(count_c(g),
  max_r count_r(g))`` and ``guess_k = max(0, len(c) - k + 1)`` for k = 1..4;
  the effective reference length is the **closest** reference length
  (ties -> the shorter one), as ``Bleu.compute_score`` uses ``option='closest'``;
* corpus: the statistics are summed over images; BLEU-n is
  ``(prod_{k<=n} (correct_k + 1e-15) / (guess_k + 1e-9)) ** (1/n)`` times the
  brevity penalty ``exp(1 - 1/ratio)`` when
  ``ratio = (testlen + 1e-15) / (reflen + 1e-9) < 1``.

No smoothing beyond those epsilons, so a corpus without any 4-gram match
scores ~0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence

from ._inputs import prepare_captions

__all__ = ["bleu4", "bleu_tokenized"]

_TINY = 1e-15
_SMALL = 1e-9


def _counts(sentence: str, n: int) -> tuple[int, dict[tuple[str, ...], int]]:
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return len(words), counts


def bleu_tokenized(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    n: int = 4,
) -> list[float]:
    """Corpus BLEU-1..n on already tokenised captions (``[B1, ..., Bn]``)."""
    testlen_total = 0
    reflen_total = 0
    guess = [0] * n
    correct = [0] * n
    for k in references:
        reflens = []
        maxcounts: dict[tuple[str, ...], int] = {}
        for ref in references[k]:
            rl, counts = _counts(ref, n)
            reflens.append(rl)
            for g, c in counts.items():
                if c > maxcounts.get(g, 0):
                    maxcounts[g] = c
        testlen, counts = _counts(predictions[k], n)
        testlen_total += testlen
        reflen_total += min((abs(rl - testlen), rl) for rl in reflens)[1]
        for o in range(n):
            guess[o] += max(0, testlen - o)
        for g, c in counts.items():
            correct[len(g) - 1] += min(maxcounts.get(g, 0), c)

    bleus = []
    prod = 1.0
    for o in range(n):
        prod *= float(correct[o] + _TINY) / (guess[o] + _SMALL)
        bleus.append(prod ** (1.0 / (o + 1)))
    ratio = (testlen_total + _TINY) / (reflen_total + _SMALL)
    if ratio < 1:
        bp = math.exp(1 - 1 / ratio)
        bleus = [b * bp for b in bleus]
    return bleus


def bleu4(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    tokenizer: str = "auto",
) -> float:
    """Corpus BLEU-4 of ``{id: caption}`` against ``{id: [reference, ...]}``.

    Equal to ``pycocoevalcap.bleu.Bleu(4).compute_score(gts, res)[0][3]`` on
    the same tokenised captions ('closest' reference length). Tokenisation
    (both sides, one pass): ``tokenizer="auto" | "ptb" | "simple" | "none"``,
    see :mod:`visprune.evaluation.metrics.tokenize`. Returned in ``[0, 1]``.
    """
    _, preds, refs = prepare_captions(predictions, references, tokenizer)
    return bleu_tokenized(preds, refs, 4)[3]
