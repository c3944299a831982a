"""Document and scoring functions of the visprune shapes tasks (lmms-eval ``!function`` targets)."""

from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parent / "data"


def _normalise(text: str) -> str:
    """First word, lower case, without punctuation (as :func:`visprune.shapes.normalise_answer`)."""
    for word in text.strip().lower().replace("</s>", " ").split():
        word = word.strip(".,?!:;")
        if word:
            return word
    return ""


def doc_to_visual(doc):
    with Image.open(DATA / doc["image"]) as img:
        return [img.convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    # The shapes model knows only its scene vocabulary: the bare question, no instruction suffix.
    return doc["question"]


def doc_to_target(doc):
    return doc["answer"]


def doc_to_choice(doc):
    return doc["choices"]


def doc_to_target_index(doc):
    return doc["choices"].index(doc["answer"])


def process_results(doc, results):
    return {"accuracy": float(_normalise(results[0]) == doc["answer"])}


# --- two rounds on one image: the question, then a caption request -----------------------------

CAPTION_QUESTION = "describe the scene ."


def doc_to_text_2round(doc, lmms_eval_specific_kwargs=None, previous_output=None, round_idx=0,
                       previous_round_info=None):
    """Round 0: the question. Round 1: a caption request. Round 2: stop.

    Later rounds return ``(visuals, context, terminal, outputs, round_info)`` as lmms-eval's
    ``generate_until_multi_round`` expects.
    """
    if round_idx == 0:
        return doc["question"]
    if round_idx == 1:
        return doc_to_visual(doc), CAPTION_QUESTION, False, None, {"round": 1}
    return None, None, True, None, previous_round_info


def process_results_2round(doc, results):
    outputs = results[0] if results and isinstance(results[0], (list, tuple)) else results
    return {"accuracy": float(_normalise(outputs[0]) == doc["answer"]), "rounds": float(len(outputs))}
