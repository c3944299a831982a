"""GQA accuracy: exact match after LLaVA's (or lmms-eval's) answer normalisation.

Sources:

* LLaVA (https://github.com/haotian-liu/LLaVA): ``llava/eval/model_vqa_loader.py``
  strips the decoded generation (``...batch_decode(...)[0].strip()``);
  ``scripts/convert_gqa_for_eval.py`` then writes
  ``res['text'].rstrip('.').lower()`` as the prediction; and the official GQA
  ``eval.py`` (run by ``scripts/v1_5/eval/gqa.sh``) scores
  ``correct = (predicted == gold)``, a plain string comparison with the gold
  ``answer`` field (already lower-case, no trailing period, in GQA).
* lmms-eval (https://github.com/EvolvingLMMs-Lab/lmms-eval):
  ``lmms_eval/tasks/gqa/gqa.yaml`` uses the ``exact_match`` metric with
  ``ignore_case: true`` and ``ignore_punctuation: true``, i.e.
  ``exact_match_hf_evaluate``: lower-case both sides, then delete every
  character of ``string.punctuation`` from both sides, then compare.
"""

from __future__ import annotations

import string

__all__ = ["normalize_gqa_answer", "gqa_accuracy"]

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalize_gqa_answer(text: str, mode: str = "llava") -> str:
    """Normalise a GQA answer.

    ``mode="llava"`` (default): ``text.strip().rstrip('.').lower()``; the
    ``strip()`` is the one LLaVA applies to every generation, ``rstrip('.')``
    and ``lower()`` come from ``convert_gqa_for_eval.py``. Nothing else: inner
    punctuation, articles and inner/trailing spaces left behind by
    ``rstrip('.')`` (``"yes ."`` -> ``"yes "``) are kept, as in LLaVA.

    ``mode="lmms-eval"``: ``text.strip()`` (the generation strip done by the
    lmms-eval model wrappers), lower-case, then remove every character of
    ``string.punctuation``.
    """
    if mode == "llava":
        return text.strip().rstrip(".").lower()
    if mode in ("lmms-eval", "lmms_eval"):
        return text.strip().lower().translate(_PUNCT_TABLE)
    raise ValueError(f"unknown GQA normalisation mode {mode!r}; use 'llava' or 'lmms-eval'")


def gqa_accuracy(prediction: str, answer: str, mode: str = "llava") -> float:
    """GQA accuracy (1.0 or 0.0) of one prediction against the gold answer.

    The rule is exact string equality after :func:`normalize_gqa_answer`
    (default ``mode="llava"``: ``strip().rstrip('.').lower()``, see the module
    docstring for the sources). The same normalisation is applied to the gold
    answer; on real GQA gold answers (lower-case, no trailing period) that is
    a no-op in LLaVA mode, so the result equals GQA ``eval.py`` on LLaVA's
    converted predictions. ``mode="lmms-eval"`` reproduces lmms-eval's
    ``exact_match`` with ``ignore_case`` and ``ignore_punctuation``.

    >>> gqa_accuracy("Yes.", "yes")
    1.0
    >>> gqa_accuracy("the left", "left")
    0.0
    """
    return 1.0 if normalize_gqa_answer(prediction, mode) == normalize_gqa_answer(answer, mode) else 0.0
