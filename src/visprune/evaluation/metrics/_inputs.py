"""Shared input checking and tokenisation for the caption metrics."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from .tokenize import tokenize_captions


def prepare_captions(
    predictions: Mapping[Hashable, str | Sequence[str]],
    references: Mapping[Hashable, Sequence[str]],
    tokenizer: str,
) -> tuple[list[Hashable], dict[Hashable, str], dict[Hashable, list[str]]]:
    """Validate ``{id: caption}`` / ``{id: [refs]}`` and tokenise both in one go.

    A prediction may also be given as a one-element list (pycocoevalcap's
    ``res`` format). Returns ``(ids, tokenised predictions, tokenised refs)``.
    """
    if set(predictions) != set(references):
        missing = set(references) - set(predictions)
        extra = set(predictions) - set(references)
        raise ValueError(
            "predictions and references must have the same ids "
            f"(missing predictions: {sorted(map(repr, missing))[:5]}, "
            f"unknown ids: {sorted(map(repr, extra))[:5]})"
        )
    if not references:
        raise ValueError("caption metrics need at least one image")
    ids = list(references)
    preds: dict[Hashable, str] = {}
    for k in ids:
        p = predictions[k]
        if not isinstance(p, str):
            p = list(p)
            if len(p) != 1 or not isinstance(p[0], str):
                raise ValueError(f"prediction for id {k!r} must be one string")
            p = p[0]
        preds[k] = p
        refs = references[k]
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references for id {k!r} must be a non-empty list of strings")
    # One tokenizer call (one Java process on the PTB path) for everything.
    joint = {("pred", i, k): [preds[k]] for i, k in enumerate(ids)}
    joint.update({("ref", i, k): list(references[k]) for i, k in enumerate(ids)})
    tok = tokenize_captions(joint, tokenizer=tokenizer)
    tok_preds = {k: tok[("pred", i, k)][0] for i, k in enumerate(ids)}
    tok_refs = {k: tok[("ref", i, k)] for i, k in enumerate(ids)}
    return ids, tok_preds, tok_refs
