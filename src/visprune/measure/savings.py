"""Counted FLOPs of a VLM at its published size, for the savings table (``docs/savings.md``).

Each adapter module under ``visprune/adapters/`` that has a savings row defines
``savings(tiny: bool) -> list[Section]``: it writes out the published ``config.json`` values of one
or more checkpoints (``tiny=True``: every width and depth shrunk, a smoke test), builds the model
on the ``meta`` device (real shapes, no weights, nothing downloaded) and counts, with the helpers
here, the stock modules at the sizes the pruned model really gives them: the vision tower on the
full image, the connector and the language-model prefill on the kept token counts (cut points as
the adapter implements them). Pruning itself cannot run on meta tensors (it reads values), and
visprune's own scoring and selection are not counted. ``scripts/savings_table.py`` loops over the
adapter table and renders the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from .. import ops

KEEPS = (1.0, 0.5, 0.25)
TEXT_TOKENS = 40  # a VQA prompt with its chat template
META = torch.device("meta")


@dataclass
class Row:
    keep: float
    at_cut: int  # visual tokens at the cut point
    lm_visual: int  # visual tokens (or latents) the language model receives
    vision: int
    connector: int
    lm: int

    @property
    def total(self) -> int:
        return self.vision + self.connector + self.lm


class Section(NamedTuple):
    """One table of ``docs/savings.md``: a checkpoint (and input) at the keep ratios of ``KEEPS``."""

    name: str
    what: str  # the visual tokens at the cut, and where the cut is
    rows: list[Row]
    source: str = ""  # where the configuration values come from
    note: str = ""  # what the count leaves out or approximates, if anything


class Counts(NamedTuple):
    """A model's counted prefill at published size as a function of the visual tokens its language
    model receives: what the savings rows and ``visprune bench``'s meta-device geometries both read."""

    n: int  # visual tokens at the cut, unpruned
    vision: int  # the vision tower on the full input
    connector: int  # projector / patch merger
    lm: Callable[[int], int]  # prefill FLOPs of a prompt of this many tokens

    def total(self, kept: int, text: int = TEXT_TOKENS) -> int:
        """Counted FLOPs of the prefill with ``kept`` visual tokens and ``text`` text tokens."""
        return self.vision + self.connector + self.lm(text + kept)


def flops(fn: Callable, *args: Any, **kwargs: Any) -> int:
    """Counted FLOPs of one call (no grad)."""
    return flops_by_module(fn, *args, **kwargs)["total"]


def flops_by_module(fn: Callable, *args: Any, **kwargs: Any) -> dict[str, int]:
    from .flops import count_flops_by_module  # imported when counting: ``import visprune`` stays as light

    with torch.no_grad():
        by_module, _ = count_flops_by_module(fn, *args, **kwargs)
    return by_module


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device=META)


def build(cls: type[nn.Module], cfg: Any) -> nn.Module:
    """``cls(cfg)`` on the meta device, in eval mode."""
    with torch.device("meta"):
        return cls(cfg).eval()


def kept(n: int, keep: float) -> int:
    return int(ops.ratio_budget(n, keep))  # the `ratio` budget's rounding


def prefill(lm: Callable, head: Callable, width: int, length: int) -> int:
    """Decoder stack over the whole prompt plus the head on its last position (generate's prefill)."""
    return flops(lm, inputs_embeds=meta(1, length, width)) + flops(head, meta(1, 1, width))


def after_connector(n: int, vision: int, connector: int, lm: Callable[[int], int], *, protected: int = 0,
                    extra: int = 0) -> list[Row]:
    """Rows of a model pruned after its connector: tower and connector run in full; the language model
    reads ``TEXT_TOKENS + extra`` text tokens (image markers the prompt adds) and the kept visual
    tokens plus ``protected`` ones (always kept). ``lm(length)``: the prefill FLOPs of a prompt."""
    rows = []
    for keep in KEEPS:
        k = kept(n, keep) + protected
        rows.append(Row(keep, k, k, vision, connector, lm(TEXT_TOKENS + extra + k)))
    return rows
