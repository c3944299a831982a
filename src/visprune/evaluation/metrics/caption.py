"""Both caption metrics from one tokenisation pass."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from ._inputs import prepare_captions
from .bleu import bleu_tokenized
from .cider import cider_tokenized

__all__ = ["caption_scores"]


def caption_scores(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    tokenizer: str = "auto",
) -> dict[str, float]:
    """``{"CIDEr": ..., "BLEU-4": ...}`` for ``{id: caption}`` vs ``{id: [refs]}``.

    Same values as :func:`~visprune.evaluation.metrics.cider` and
    :func:`~visprune.evaluation.metrics.bleu4` (pycocoevalcap's ``Cider()`` and
    ``Bleu(4)``), but the captions are tokenised only once (a single Java call
    on the PTB path).
    """
    _, preds, refs = prepare_captions(predictions, references, tokenizer)
    return {
        "CIDEr": cider_tokenized(preds, refs)[0],
        "BLEU-4": bleu_tokenized(preds, refs, 4)[3],
    }
