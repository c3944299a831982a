"""Evaluation metrics: VQAv2 accuracy, GQA accuracy, COCO CIDEr-D and BLEU-4.

Pure Python (no third-party dependency). ``pycocoevalcap`` (the ``eval``
extra) plus a ``java`` executable are only needed for the standard Java PTB
caption tokenisation; without them ``tokenizer="auto"`` falls back to a
pure-Python approximation (see :mod:`visprune.evaluation.metrics.tokenize`).
"""

from .bleu import bleu4, bleu_tokenized
from .caption import caption_scores
from .cider import cider, cider_tokenized
from .gqa import gqa_accuracy, normalize_gqa_answer
from .tokenize import ptb_available, simple_tokenize, tokenize_captions
from .vqa import normalize_vqa_answer, vqa_accuracy

__all__ = [
    "vqa_accuracy",
    "normalize_vqa_answer",
    "gqa_accuracy",
    "normalize_gqa_answer",
    "cider",
    "cider_tokenized",
    "bleu4",
    "bleu_tokenized",
    "caption_scores",
    "tokenize_captions",
    "simple_tokenize",
    "ptb_available",
]
