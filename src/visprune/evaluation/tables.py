"""The one Markdown table writer of summaries, sweeps, the demo, the benchmark and the docs scripts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "---") -> str:
    """``| a | b |`` lines: the header, the rule (``align`` per column: ``---``, ``---:``), one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([align] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: Any, spec: str = ".3f") -> str:
    """``value`` formatted with ``spec``; ``-`` for a missing value."""
    return "-" if value is None else format(value, spec)
