"""VQAv2 accuracy, following the official VQA evaluation code.

Source of the rules: ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` of the
official VQA API (https://github.com/GT-Vision-Lab/VQA, class ``VQAEval``,
methods ``evaluate``, ``processPunctuation`` and ``processDigitArticle``). The
tables (contractions, number map, articles, punctuation list) and the two
regular expressions below are copied verbatim from that file, including its
quirks (the curly apostrophes in the contraction targets, the never-matching
capitalised keys ``"Im"``/``"Ive"``, the ``(?!<=\\d)`` look-ahead that is a
no-op, and ``re.UNICODE`` passed as the *count* argument of ``re.sub``).

What :func:`vqa_accuracy` does, step by step (as ``VQAEval.evaluate``):

1. prediction: ``\\n`` and ``\\t`` -> space, ``strip()``, then
   :func:`process_punctuation`, then :func:`process_digit_article`
   (lower-case, number words -> digits, drop ``a``/``an``/``the``,
   contraction fix-ups);
2. ground truth: the answers are used **as given** when all annotators agree,
   and only passed through :func:`process_punctuation` (not through
   :func:`process_digit_article`) when they disagree (``len(set(answers)) > 1``);
3. for each annotator ``i`` the accuracy against the *other* annotators is
   ``min(1, #matches / 3)``; the result is the mean over annotators (with the
   usual ten answers: the ten leave-one-out subsets of nine).

Differences from lmms-eval's ``vqav2`` task (which uses the EvalAI
``EvalAIAnswerProcessor`` of ``m4c_evaluator``): that processor has a slightly
different punctuation list (adds ``-``, ``!``, ``{``, ``}``; lacks ``:`` and
``'``), first removes ``,``/``?`` and splits ``'s``, and, when annotators
disagree, also applies the digit/article step to the ground truth. On real
VQAv2 data (whose ground-truth answers are already normalised) the two agree on
almost all questions; this module implements the official rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "CONTRACTIONS",
    "MANUAL_MAP",
    "ARTICLES",
    "PUNCTUATION",
    "process_punctuation",
    "process_digit_article",
    "normalize_vqa_answer",
    "vqa_accuracy",
]

# Verbatim from vqaEval.py (keys and values, curly apostrophes included).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn’t’ve", "couldnt’ve": "couldn’t’ve",
    "didnt": "didn’t", "doesnt": "doesn’t", "dont": "don’t", "hadnt": "hadn’t",
    "hadnt’ve": "hadn’t’ve", "hadn'tve": "hadn’t’ve", "hasnt": "hasn’t",
    "havent": "haven’t", "hed": "he’d", "hed’ve": "he’d’ve", "he’dve": "he’d’ve",
    "hes": "he’s", "howd": "how’d", "howll": "how’ll", "hows": "how’s",
    "Id’ve": "I’d’ve", "I’dve": "I’d’ve", "Im": "I’m", "Ive": "I’ve",
    "isnt": "isn’t", "itd": "it’d", "itd’ve": "it’d’ve", "it’dve": "it’d’ve",
    "itll": "it’ll", "let’s": "let’s", "maam": "ma’am", "mightnt": "mightn’t",
    "mightnt’ve": "mightn’t’ve", "mightn’tve": "mightn’t’ve", "mightve": "might’ve",
    "mustnt": "mustn’t", "mustve": "must’ve", "neednt": "needn’t", "notve": "not’ve",
    "oclock": "o’clock", "oughtnt": "oughtn’t", "ow’s’at": "’ow’s’at",
    "’ows’at": "’ow’s’at", "’ow’sat": "’ow’s’at", "shant": "shan’t",
    "shed’ve": "she’d’ve", "she’dve": "she’d’ve", "she’s": "she’s",
    "shouldve": "should’ve", "shouldnt": "shouldn’t", "shouldnt’ve": "shouldn’t’ve",
    "shouldn’tve": "shouldn’t’ve", "somebody’d": "somebodyd",
    "somebodyd’ve": "somebody’d’ve", "somebody’dve": "somebody’d’ve",
    "somebodyll": "somebody’ll", "somebodys": "somebody’s", "someoned": "someone’d",
    "someoned’ve": "someone’d’ve", "someone’dve": "someone’d’ve",
    "someonell": "someone’ll", "someones": "someone’s", "somethingd": "something’d",
    "somethingd’ve": "something’d’ve", "something’dve": "something’d’ve",
    "somethingll": "something’ll", "thats": "that’s", "thered": "there’d",
    "thered’ve": "there’d’ve", "there’dve": "there’d’ve", "therere": "there’re",
    "theres": "there’s", "theyd": "they’d", "theyd’ve": "they’d’ve",
    "they’dve": "they’d’ve", "theyll": "they’ll", "theyre": "they’re",
    "theyve": "they’ve", "twas": "’twas", "wasnt": "wasn’t", "wed’ve": "we’d’ve",
    "we’dve": "we’d’ve", "weve": "we've", "werent": "weren’t", "whatll": "what’ll",
    "whatre": "what’re", "whats": "what’s", "whatve": "what’ve", "whens": "when’s",
    "whered": "where’d", "wheres": "where's", "whereve": "where’ve", "whod": "who’d",
    "whod’ve": "who’d’ve", "who’dve": "who’d’ve", "wholl": "who’ll", "whos": "who’s",
    "whove": "who've", "whyll": "why’ll", "whyre": "why’re", "whys": "why’s",
    "wont": "won’t", "wouldve": "would’ve", "wouldnt": "wouldn’t",
    "wouldnt’ve": "wouldn’t’ve", "wouldn’tve": "wouldn’t’ve", "yall": "y’all",
    "yall’ll": "y’all’ll", "y’allll": "y’all’ll", "yall’d’ve": "y’all’d’ve",
    "y’alld’ve": "y’all’d’ve", "y’all’dve": "y’all’d’ve", "youd": "you’d",
    "youd’ve": "you’d’ve", "you’dve": "you’d’ve", "youll": "you’ll",
    "youre": "you’re", "youve": "you’ve",
}

MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES: tuple[str, ...] = ("a", "an", "the")

PUNCTUATION: tuple[str, ...] = (
    ";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_",
    ">", "<", "@", "`", ",", "?",
)

# Verbatim patterns. "(?!<=\d)" is a negative *look-ahead* for the literal
# "<=" + digit (a typo for a look-behind in the original), so in practice the
# pattern removes every "." that is not followed by a digit.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def process_punctuation(text: str) -> str:
    """``VQAEval.processPunctuation``: the official punctuation handling.

    For each punctuation mark ``p``: if ``p`` touches a space anywhere in the
    *input* (``p + ' '`` or ``' ' + p`` occurs) or the input contains a comma
    between two digits (``"1,000"``), every ``p`` is deleted; otherwise every
    ``p`` is replaced by a space. Then every period not followed by a digit is
    deleted (at most 32 of them: the original passes ``re.UNICODE`` == 32 as
    the ``count`` argument of ``re.sub``; kept for fidelity).
    """
    out = text
    comma_in_number = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or comma_in_number:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, int(re.UNICODE))


def process_digit_article(text: str) -> str:
    """``VQAEval.processDigitArticle``: lower-case, split on whitespace, map
    number words (``MANUAL_MAP``, "none" -> "0" included), drop articles, then
    apply the contraction table word by word, and re-join with single spaces."""
    words = []
    for word in text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(text: str) -> str:
    """Normalise a *predicted* answer exactly as ``VQAEval.evaluate`` does:
    newline/tab -> space, strip, :func:`process_punctuation`,
    :func:`process_digit_article`.

    >>> normalize_vqa_answer("Two dogs.")
    '2 dogs'
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQAv2 accuracy of one predicted answer, in ``[0, 1]``.

    ``answers`` are the human answers (VQAv2 has ten per question). The
    prediction is normalised with :func:`normalize_vqa_answer`; the answers are
    passed through :func:`process_punctuation` only when they are not all
    identical (exactly as the official code). The score is the mean, over each
    annotator ``i``, of ``min(1, #(other annotators' answers == prediction) / 3)``.

    Worked values with ten answers: 3 matching answers -> 7 subsets see 3
    matches (1.0) and 3 subsets see 2 (2/3), so ``(7 + 2) / 10 = 0.9``; a single
    matching answer -> ``9 * (1/3) / 10 = 0.3``; 4 or more -> 1.0.

    Other answer counts (the official loop is not tied to ten, so this is its
    natural generalisation):

    * ``N >= 2``: the same leave-one-out mean over the ``N`` annotators. Note
      that with fewer than four answers 1.0 is unreachable (three matching
      answers out of three give 2/3), as the formula dictates.
    * ``N == 1``: leave-one-out would always give 0 (the only subset is
      empty), so a single reference is scored as exact match (1.0 or 0.0)
      after the same normalisation.
    * ``N == 0``: :class:`ValueError`.

    Leave-one-out is by position: the official code removes the annotator's
    own answer dict, which in real data (unique ``answer_id``) is exactly one
    entry, even when several annotators gave the same string.
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not a single string")
    answers = list(answers)
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred = normalize_vqa_answer(prediction)
    if len(set(answers)) > 1:
        gts = [process_punctuation(a) for a in answers]
    else:
        gts = answers
    if len(gts) == 1:
        return 1.0 if gts[0] == pred else 0.0
    matches = [g == pred for g in gts]
    total = sum(matches)
    accs = [min(1.0, (total - int(m)) / 3.0) for m in matches]
    return sum(accs) / len(accs)
