"""Settings measured on one model and shipped in its folder: ``<folder>/visprune.json``.

``visprune tune`` writes the file (:mod:`visprune.evaluation.tune`); ``prune_`` reads it through
:func:`measured_atp` and :func:`measured_relevance`. Its ``atp`` section holds, per question relevance (``clip``: the model's CLIP
partner; ``lmtext``: the language model's embeddings), the ``alpha`` chosen on calibration
questions and the evidence: ATP at that alpha against its saliency term alone (scorer ``cls``),
paired, with a 95% interval, and the verdict ``helps`` / ``tie`` / ``harms``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the file, in the folder ``from_pretrained`` loaded the model from
MEASURED_FILE = "visprune.json"
#: ATP's fusion weight where the model's folder has no measurement for the relevance that runs
DEFAULT_ALPHA = 0.75
VERDICTS = ("helps", "tie", "harms")


def model_folder(model: Any) -> Path | None:
    """The local folder ``from_pretrained`` loaded ``model`` from (``model.name_or_path``), or None
    (a hub id, or a model built in memory)."""
    for source in (getattr(model, "name_or_path", None), getattr(getattr(model, "config", None), "_name_or_path", None)):
        if isinstance(source, (str, Path)) and str(source) and Path(source).expanduser().is_dir():
            return Path(source).expanduser()
    return None


def relevance_kind(source: str | None) -> str | None:
    """``"clip"`` or ``"lmtext"`` from a scorer's ``relevance_source`` (``"clip:<path>"``, ``"lmtext"``)."""
    if source is None:
        return None
    return "clip" if source.startswith("clip:") else source


def measured_atp(model: Any, kind: str | None) -> dict | None:
    """The model folder's ATP measurement for relevance ``kind``, checked, or None when there is none.

    A file that is there but malformed raises ``ValueError`` naming it: a measurement that cannot
    be read is not silently replaced by the default.
    """
    folder = model_folder(model)
    if folder is None or kind is None or not (folder / MEASURED_FILE).is_file():
        return None
    path = folder / MEASURED_FILE
    try:
        entry = json.loads(path.read_text()).get("atp", {}).get(kind)
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{path} is not a visprune measurement file ({err}); rerun `visprune tune` or remove it") from None
    if entry is None:
        return None
    alpha = entry.get("alpha") if isinstance(entry, dict) else None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0 \
            or entry.get("verdict") not in VERDICTS:
        raise ValueError(f"{path}: atp.{kind} needs an alpha in [0, 1] and a verdict ({', '.join(VERDICTS)}); "
                         f"got {entry!r}. Rerun `visprune tune` or remove the file")
    return dict(entry, file=str(path))


def measured_relevance(model: Any) -> str | None:
    """The question relevance ``visprune tune`` chose for ATP on this model (``"clip"`` or ``"lmtext"``),
    or None when its folder has no measurement."""
    folder = model_folder(model)
    if folder is None or not (folder / MEASURED_FILE).is_file():
        return None
    try:
        choice = (json.loads((folder / MEASURED_FILE).read_text()).get("relevance") or {}).get("choice")
    except (json.JSONDecodeError, AttributeError):
        return None  # measured_atp names the malformed file
    return choice if choice in ("clip", "lmtext") else None
