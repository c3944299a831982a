"""Method specs for the command line: ``none``, ``atp:keep=0.4``, ``e-adaprune:energy=0.95``, ..."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import PruneConfig
from .scoring.scorers import SCORERS

#: Named methods: a scorer and budget pairing. Every registered scorer name is a method too.
PRESETS: dict[str, dict[str, Any]] = {
    "atp": {"scorer": "atp"},
    # E-AdaPrune decides how many tokens to keep; the paper plugs its budget into existing
    # importance scores. visprune pairs it with [CLS] attention (FasterVLM's score).
    "e-adaprune": {"scorer": "cls", "budget": "energy"},
}

# The default method lists, one home. Energy shares chosen so the adaptive budgets keep about as
# many tokens on average as the fixed ones (32 and 64 of 256) on the bundled shapes model:
# calibrated on scenes of seed 777, not on the demo's questions (scripts/shapes_comparison.py,
# docs/comparison.md). Its projected tokens put most of their spectral energy in a few
# directions, so energy=0.9 keeps only ~9 tokens there.
#: about 64 of 256 tokens: what the viewer shows and ``visprune bench`` times by default
QUICK_METHODS = ("atp:keep=0.25", "e-adaprune:energy=0.9995", "random:keep=0.25")
#: the demo's comparison: the unpruned model, then about 32 and about 64 of 256 tokens
DEFAULT_METHODS = (
    "none",
    "atp:keep=0.125",
    "e-adaprune:energy=0.9945",
    "random:keep=0.125",
    "atp:budget=energy,energy=0.9945",
    *QUICK_METHODS,
)


@dataclass(frozen=True)
class Method:
    """A labelled pruning method; ``config`` is None for the unpruned reference."""

    label: str
    config: PruneConfig | None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "config": None if self.config is None else self.config.to_dict()}


def method_names() -> list[str]:
    return ["none", *sorted(set(PRESETS) | set(SCORERS.names()))]


def _value(text: str) -> Any:
    if "/" in text:  # a list of numbers (layers=8/16/24); a path or hub id (openai/clip-...) stays text
        parts = [_value(part.strip()) for part in text.split("/")]
        if all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in parts):
            return parts
        return text
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_method(spec: str, **defaults: Any) -> Method:
    """Parse ``NAME[:key=value,...]`` into a :class:`Method` (``ValueError`` with the valid names).

    Keys are ``PruneConfig`` fields, or settings of the scorer's constructor (``dart:k=64,pivot_image=8``,
    ``pdrop:k=64,layers=8/16/24``: numbers joined by ``/`` are a list); a field wins over a scorer
    setting of the same name."""
    name, _, settings = spec.strip().partition(":")
    name = name.strip().lower()
    if name == "none":
        if settings:
            raise ValueError("method 'none' takes no settings")
        return Method("none", None)
    if name in PRESETS:
        fields = dict(PRESETS[name])
    elif name in SCORERS:
        fields = {"scorer": name}
    else:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(method_names())}")
    fields.update(defaults)
    for item in filter(None, (s.strip() for s in settings.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"method setting {item!r} must look like key=value (in {spec!r})")
        fields[key.strip()] = _value(value.strip())
    return Method(spec.strip(), PruneConfig.from_dict(fields))
