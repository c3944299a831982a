"""Corpus CIDEr-D, a pure-Python re-implementation of pycocoevalcap's ``Cider``.

Facts taken from ``pycocoevalcap/cider/cider_scorer.py`` (Vedantam, Zitnick &
Parikh, "CIDEr: Consensus-based Image Description Evaluation", CVPR 2015;
code by R. Vedantam and T.-Y. Lin, https://github.com/tylin/coco-caption):

* n-grams of length 1..4 over whitespace tokens;
* document frequency ``df(g)`` = number of images whose *reference* set
  contains ``g``; ``log_N = log(#images)``; weight of an n-gram with term
  frequency ``tf`` is ``tf * (log_N - log(max(1, df(g))))``;
* per n-gram order, clipped cosine similarity between candidate and each
  reference: ``sum_g min(c_g, r_g) * r_g / (|c| |r|)`` (left un-normalised
  when a norm is 0), times the Gaussian length penalty
  ``exp(-(l_c - l_r)^2 / (2 sigma^2))`` with ``sigma = 6``, where the "length"
  is, as in pycocoevalcap, the number of **bigrams** of the caption;
* image score = mean over the 4 orders, summed over references, divided by
  the number of references, times 10; corpus score = mean over images.

Because ``log_N = 0`` for a single image, CIDEr of a one-image corpus is 0, as
in pycocoevalcap: CIDEr is a corpus-level metric.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence

from ._inputs import prepare_captions

__all__ = ["cider", "cider_tokenized"]

Ngram = tuple[str, ...]


def _ngram_counts(sentence: str, n: int) -> dict[Ngram, int]:
    words = sentence.split()
    counts: dict[Ngram, int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def cider_tokenized(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, dict[Hashable, float]]:
    """CIDEr-D on already tokenised captions: ``(corpus score, per-image scores)``."""
    ids = list(references)
    test_counts = [_ngram_counts(predictions[k], n) for k in ids]
    ref_counts = [[_ngram_counts(r, n) for r in references[k]] for k in ids]

    doc_freq: dict[Ngram, float] = defaultdict(float)
    for refs in ref_counts:
        for g in {g for ref in refs for g in ref}:
            doc_freq[g] += 1.0
    log_n = math.log(float(len(ref_counts)))

    def to_vec(counts: dict[Ngram, int]):
        vec: list[dict[Ngram, float]] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in counts.items():
            df = math.log(max(1.0, doc_freq.get(g, 0.0)))
            o = len(g) - 1
            w = float(tf) * (log_n - df)
            vec[o][g] = w
            norm[o] += w ** 2
            if o == 1:  # pycocoevalcap counts bigrams as the "length"
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    penalty_den = 2 * sigma ** 2
    scores: dict[Hashable, float] = {}
    for k, test, refs in zip(ids, test_counts, ref_counts):
        vec, norm, length = to_vec(test)
        acc = [0.0] * n
        for ref in refs:
            vec_r, norm_r, length_r = to_vec(ref)
            delta = float(length - length_r)
            gauss = math.e ** (-(delta ** 2) / penalty_den)
            for o in range(n):
                val = 0.0
                ref_o = vec_r[o]
                for g, w in vec[o].items():
                    r = ref_o.get(g, 0.0)
                    val += min(w, r) * r
                if norm[o] != 0 and norm_r[o] != 0:
                    val /= norm[o] * norm_r[o]
                acc[o] += val * gauss
        scores[k] = sum(acc) / n / len(refs) * 10.0
    corpus = sum(scores.values()) / len(scores)
    return corpus, scores


def cider(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    tokenizer: str = "auto",
) -> float:
    """Corpus CIDEr-D of ``{id: caption}`` against ``{id: [reference, ...]}``.

    Equal to ``pycocoevalcap.cider.Cider().compute_score(gts, res)[0]`` on the
    same tokenised captions (sigma 6, n-grams up to 4, document frequencies
    from the references, clipping, Gaussian length penalty, x10). Tokenisation
    (both sides, one pass): ``tokenizer="auto" | "ptb" | "simple" | "none"``,
    see :mod:`visprune.evaluation.metrics.tokenize`. Returned on pycocoevalcap's scale
    (e.g. ~1.1 for a good model on COCO, reported as 110 in papers).
    """
    _, preds, refs = prepare_captions(predictions, references, tokenizer)
    return cider_tokenized(preds, refs)[0]
