"""Tests for visprune.evaluation.metrics: hand-computed values and equality with pycocoevalcap."""

from __future__ import annotations

import math

import pytest

from visprune.evaluation.metrics import (
    bleu4,
    bleu_tokenized,
    caption_scores,
    cider,
    cider_tokenized,
    gqa_accuracy,
    normalize_gqa_answer,
    normalize_vqa_answer,
    ptb_available,
    simple_tokenize,
    tokenize_captions,
    vqa_accuracy,
)
from visprune.evaluation.metrics.vqa import process_punctuation

# --------------------------------------------------------------------------
# VQAv2
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two dogs.", "2 dogs"),  # number word, final period
        ("none", "0"),  # manual map
        ("A dog", "dog"),  # article
        ("the red/white an apple", "red white apple"),  # "/" -> space, articles
        ("1,000 dogs", "1000 dogs"),  # comma between digits: punctuation deleted
        ("yes, it is", "yes it is"),  # ", " touches a space: deleted
        ("3.5", "3.5"),  # period before a digit kept
        ("t-shirt", "t-shirt"),  # "-" is not in the official list
        ("dont", "don’t"),  # contraction map (curly apostrophe, as official)
        ("whats", "what’s"),
        ("  Yes\n", "yes"),
    ],
)
def test_normalize_vqa_answer(text, expected):
    assert normalize_vqa_answer(text) == expected


def test_process_punctuation_space_rule():
    # each mark is judged on the input: touching a space -> deleted, else -> space
    assert process_punctuation("(red)") == " red "
    assert process_punctuation("red (dark)") == "red dark "  # " (" deleted, ")" -> " "
    assert process_punctuation("yes.") == "yes"


def test_vqa_number_words_and_articles():
    assert vqa_accuracy("two", ["2"] * 10) == 1.0
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0
    assert vqa_accuracy("a dog", ["dog"] * 10) == 1.0
    assert vqa_accuracy("The Dog", ["dog"] * 10) == 1.0
    assert vqa_accuracy("dog", ["cat"] * 10) == 0.0
    # ground truth is never digit-processed (official behaviour)
    assert vqa_accuracy("two", ["two"] * 10) == 0.0


def test_vqa_punctuation_and_contractions():
    assert vqa_accuracy("Yes.", ["yes"] * 10) == 1.0
    assert vqa_accuracy("1,000", ["1000"] * 10) == 1.0
    assert vqa_accuracy("red/white", ["red white"] * 10) == 1.0
    assert vqa_accuracy("dont", ["don’t"] * 10) == 1.0


def test_vqa_leave_one_out_values():
    # 3 of 10 match: 7 subsets keep all 3 (1.0), 3 subsets keep 2 (2/3) -> 0.9
    assert vqa_accuracy("x", ["x"] * 3 + ["y"] * 7) == pytest.approx(0.9, abs=1e-12)
    # 1 of 10: 9 subsets see 1 match (1/3), 1 sees 0 -> 0.3
    assert vqa_accuracy("x", ["x"] + ["y"] * 9) == pytest.approx(0.3, abs=1e-12)
    # 2 of 10: 8 subsets see 2 (2/3), 2 see 1 (1/3) -> 18/30 = 0.6
    assert vqa_accuracy("x", ["x"] * 2 + ["y"] * 8) == pytest.approx(0.6, abs=1e-12)
    # 4 of 10: every subset sees >= 3 -> 1.0
    assert vqa_accuracy("x", ["x"] * 4 + ["y"] * 6) == 1.0
    # normalised prediction against disagreeing annotators
    answers = ["2", "2", "2", "3", "3", "4", "2 dogs", "two", "3", "3"]
    assert vqa_accuracy("Two", answers) == pytest.approx(0.9, abs=1e-12)


def test_vqa_ground_truth_punctuation_only_when_annotators_disagree():
    # disagreement -> "yes." is punctuation-processed to "yes": 5 matches -> 1.0
    assert vqa_accuracy("yes", ["yes."] * 5 + ["no"] * 5) == 1.0
    # unanimous -> answers used as given; "yes." != normalised "yes"
    assert vqa_accuracy("yes", ["yes."] * 10) == 0.0


def test_vqa_other_answer_counts():
    # 12 answers, 3 match: 9 subsets see 3 (1.0), 3 see 2 (2/3) -> 11/12
    assert vqa_accuracy("x", ["x"] * 3 + ["y"] * 9) == pytest.approx(11 / 12, abs=1e-12)
    # 3 answers all matching: each subset sees 2 -> 2/3 (formula cap)
    assert vqa_accuracy("x", ["x"] * 3) == pytest.approx(2 / 3, abs=1e-12)
    # single answer: exact match after normalisation
    assert vqa_accuracy("A Dog.", ["dog"]) == 1.0
    assert vqa_accuracy("cat", ["dog"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("dog", [])
    with pytest.raises(TypeError):
        vqa_accuracy("dog", "dog")


# --------------------------------------------------------------------------
# GQA
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "answer", "llava", "lmms"),
    [
        ("yes", "yes", 1.0, 1.0),
        ("Yes.", "yes", 1.0, 1.0),
        ("  Left. \n", "left", 1.0, 1.0),
        ("the left", "left", 0.0, 0.0),  # articles are not removed
        ("yes, it is", "yes", 0.0, 0.0),
        ("Yes .", "yes", 0.0, 0.0),  # rstrip('.') leaves the space
        ("Left!", "left", 0.0, 1.0),  # only lmms-eval removes "!"
        ("t-shirt", "tshirt", 0.0, 1.0),
        ("Yes..", "yes", 1.0, 1.0),
    ],
)
def test_gqa_accuracy(prediction, answer, llava, lmms):
    assert gqa_accuracy(prediction, answer) == llava
    assert gqa_accuracy(prediction, answer, mode="llava") == llava
    assert gqa_accuracy(prediction, answer, mode="lmms-eval") == lmms


def test_gqa_normalisation_and_errors():
    assert normalize_gqa_answer(" Red car. ") == "red car"
    assert normalize_gqa_answer("Red, car!", mode="lmms-eval") == "red car"
    with pytest.raises(ValueError):
        gqa_accuracy("yes", "yes", mode="vqa")


# --------------------------------------------------------------------------
# Caption metrics
# --------------------------------------------------------------------------

PREDICTIONS = {
    391895: "A man riding a motorcycle down a dirt road.",
    522418: "A woman cutting a large cake with a knife.",
    184613: "A boy holding an umbrella next to a herd of cows",
    318219: "A young boy using a computer mouse and keyboard.",
    554625: "A boy sitting in front of a laptop computer.",
}
REFERENCES = {
    391895: [
        "A man with a red helmet on a small moped on a dirt road. ",
        "Man riding a motor bike on a dirt road on the countryside.",
        "A man riding on the back of a motorcycle.",
        "A dirt path with a young person on a motor bike rests to the foreground of a verdant area with a bridge and a background of cloud-wreathed mountains. ",
        "A man in a red shirt and a red hat is on a motorcycle on a hill side.",
    ],
    522418: [
        "A woman wearing a net on her head cutting a cake. ",
        "A woman cutting a large white sheet cake.",
        "A woman wearing a hair net cutting a large sheet cake.",
        "there is a woman that is cutting a white cake",
        "A woman marking a cake with the back of a chef's knife. ",
    ],
    184613: [
        "A child holding a flowered umbrella and petting a yak.",
        "A young man holding an umbrella next to a herd of cattle.",
        "a young boy barefoot holding an umbrella touching the horn of a cow",
        "A young boy with an umbrella who is touching the horn of a cow.",
        "A boy holding an umbrella while standing next to livestock.",
    ],
    318219: [
        "A young boy standing in front of a computer keyboard.",
        "a little boy wearing headphones and looking at a computer monitor",
        "He is listening intently to the computer at school.",
        "A young boy stares up at the computer monitor.",
        "a young kid with head phones on using a computer ",
    ],
    554625: [
        "A boy wearing headphones using one computer in a long row of computers",
        "A little boy with earphones on listening to something.",
        "A group of people sitting at desk using computers.",
        "Children sitting at computer stations on a long table.",
        "A small child wearing headphones plays on the computer.",
    ],
}


def test_simple_tokenizer_cases():
    assert simple_tokenize("A man's dog isn't running (quickly) on the \"beach\".") == (
        "a man 's dog is n't running -lrb- quickly -rrb- on the beach"
    )
    assert simple_tokenize("Two people, a black-and-white cat; and 3.5 dogs... Wow!") == (
        "two people a black-and-white cat and 3.5 dogs wow"
    )
    assert simple_tokenize("It's 10:30 a.m. in the U.S. -- can't you see?") == (
        "it 's 10:30 a.m. in the u.s. ca n't you see"
    )
    assert simple_tokenize("A bus that says 'STOP' at 4:00 pm.") == "a bus that says stop at 4:00 pm"
    assert simple_tokenize("I cannot see 1,000 cows, gonna go") == "i can not see 1,000 cows gon na go"


def test_cider_hand_computed():
    # Two images, one reference each, predictions equal to their reference.
    # Every n-gram has df = 1 and weight log(2); unigram and bigram cosines are
    # 1, there are no 3-/4-grams (cosine 0), no length penalty:
    # (1 + 1 + 0 + 0) / 4 * 10 = 5.0 per image.
    preds = {1: "a b", 2: "c d"}
    refs = {1: ["a b"], 2: ["c d"]}
    assert cider(preds, refs, tokenizer="none") == pytest.approx(5.0, abs=1e-12)
    # A one-image corpus has log(N) = 0 -> all weights 0 -> CIDEr 0.
    assert cider({1: "a b"}, {1: ["a b"]}, tokenizer="none") == 0.0
    # Unmatched prediction -> 0 for that image: corpus mean (5 + 0) / 2.
    assert cider({1: "a b", 2: "x y"}, refs, tokenizer="none") == pytest.approx(2.5, abs=1e-12)


def test_bleu4_hand_computed():
    # Identical captions: every precision (n + 1e-15) / (n + 1e-9), no BP.
    preds = {1: "a man rides a horse", 2: "two dogs play in the snow"}
    refs = {1: ["a man rides a horse", "someone on a horse"], 2: ["two dogs play in the snow"]}
    b = bleu4(preds, refs, tokenizer="none")
    assert b == pytest.approx(1.0, abs=1e-9)
    assert b < 1.0
    # No 4-gram in common: p = 3/4, 2/3, 1/2 and 1e-15 / 1 (the epsilon only),
    # so BLEU-4 = (1/4 * 1e-15) ** (1/4) ~ 1.26e-4.
    b = bleu4({1: "a b c d"}, {1: ["a b c e"]}, tokenizer="none")
    assert b == pytest.approx((0.25e-15) ** 0.25, rel=1e-6)
    # Brevity penalty: 2-word candidate, closest ref has 4 words -> exp(1 - 4/2).
    bl = bleu_tokenized({1: "a b"}, {1: ["a b c d"]}, n=2)
    assert bl[0] == pytest.approx(math.exp(-1.0), rel=1e-9)


def test_caption_inputs_and_combined_scores():
    preds = {k: [v] for k, v in PREDICTIONS.items()}  # pycocoevalcap-style list
    s = caption_scores(preds, REFERENCES, tokenizer="simple")
    assert s["CIDEr"] == cider(PREDICTIONS, REFERENCES, tokenizer="simple")
    assert s["BLEU-4"] == bleu4(PREDICTIONS, REFERENCES, tokenizer="simple")
    assert 0.0 < s["BLEU-4"] < 1.0 and s["CIDEr"] > 0.0
    with pytest.raises(ValueError):
        cider({1: "a"}, {2: ["a"]}, tokenizer="none")
    with pytest.raises(ValueError):
        bleu4({1: "a"}, {1: []}, tokenizer="none")
    with pytest.raises(ValueError):
        cider(PREDICTIONS, REFERENCES, tokenizer="nltk")


def test_cider_bleu_equal_pycocoevalcap():
    Cider = pytest.importorskip(
        "pycocoevalcap.cider.cider", reason="pycocoevalcap not installed (optional 'eval' extra)"
    ).Cider
    Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu

    gts = tokenize_captions(REFERENCES, tokenizer="simple")
    res = tokenize_captions({k: [v] for k, v in PREDICTIONS.items()}, tokenizer="simple")

    ref_cider, ref_per_image = Cider().compute_score(gts, res)
    ref_bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]

    ours = cider(PREDICTIONS, REFERENCES, tokenizer="simple")
    assert ours == pytest.approx(float(ref_cider), rel=1e-12)
    assert ours > 0.5  # sanity: these are decent captions

    tok_preds = {k: v[0] for k, v in res.items()}
    _, per_image = cider_tokenized(tok_preds, gts)
    assert [per_image[k] for k in gts] == pytest.approx(list(ref_per_image), rel=1e-12)

    assert bleu4(PREDICTIONS, REFERENCES, tokenizer="simple") == pytest.approx(ref_bleu[3], rel=1e-12)
    assert bleu_tokenized(tok_preds, gts, 4) == pytest.approx(ref_bleu, rel=1e-12)


def test_auto_tokenizer_falls_back_without_java(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no java reachable
    assert not ptb_available()
    with pytest.warns(UserWarning, match="simple"):
        toks = tokenize_captions({1: ["A Dog, running."]}, tokenizer="auto")
    assert toks == {1: ["a dog running"]}
    with pytest.raises(RuntimeError):
        tokenize_captions({1: ["A dog."]}, tokenizer="ptb")


@pytest.mark.skipif(not ptb_available(), reason="needs pycocoevalcap and a 'java' executable")
def test_ptb_tokenizer_java():
    captions = {k: [PREDICTIONS[k]] + REFERENCES[k] for k in PREDICTIONS}
    captions["tricky"] = [
        "A man's dog isn't running (quickly) on the \"beach\".",
        "It's 10:30 a.m. in the U.S. -- can't you see?",
        "A café “quoted” it’s — fine… 50% of #1 dogs",
        "",
    ]
    toks = tokenize_captions(captions, tokenizer="ptb")  # the one Java call
    assert toks["tricky"] == [
        "a man 's dog is n't running -lrb- quickly -rrb- on the beach",
        "it 's 10:30 a.m. in the u.s. ca n't you see",
        "a café quoted it 's fine 50 % of # 1 dogs",
        "",
    ]
    assert toks[391895][0] == "a man riding a motorcycle down a dirt road"
    assert toks[522418][5] == "a woman marking a cake with the back of a chef 's knife"
    # the pure-Python fallback agrees with CoreNLP on all of these captions
    assert toks == {k: [simple_tokenize(c) for c in v] for k, v in captions.items()}
