"""Methods a model refuses (``prune_`` says why, e.g. FastV on Gemma 3's sliding-window layers):
reported as refused, with ``prune_``'s message, instead of ending the benchmark."""

from __future__ import annotations

from typing import Any

from ...methods import Method
from ...transform import prune_, unprune_


def refusal(model: Any, method: Method, processor: Any = None) -> str | None:
    """``prune_``'s message if it refuses ``method`` on ``model`` (the errors ``visprune eval`` reports
    as "cannot prune": ``TypeError``, ``ValueError``, ``OSError``), else None; the model is left unpruned."""
    try:
        prune_(model, method.config, processor=processor)
    except (TypeError, ValueError, OSError) as err:
        return str(err)
    unprune_(model)
    return None


def split_refused(model: Any, methods: list[Method], processor: Any = None) -> tuple[list[Method], dict[str, str]]:
    """(the methods ``model`` runs, in order; ``{label: prune_'s message}`` of those it refuses)."""
    refused = {m.label: msg for m in methods if (msg := refusal(model, m, processor)) is not None}
    return [m for m in methods if m.label not in refused], refused


def refused_row(method: Method, message: str) -> dict:
    """A report row for a refused method: its label, config and the refusal, nothing measured."""
    return {"method": method.label, "config": method.to_dict()["config"], "refused": message}
