"""What one ``visprune eval`` run is asked to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..methods import Method
from .tasks import Task


@dataclass
class EvalSettings:
    """Everything a run needs; :func:`check` validates it before any model is loaded."""

    model: str
    task: Task
    methods: list[Method]
    out: Path
    corruptions: list[tuple[str, int]] = field(default_factory=list)
    batch_size: int = 1
    device: str = "auto"
    dtype: str = "float32"
    timing: int = 10
    repeats: int = 3
    timing_tokens: int = 2
    max_new_tokens: int | None = None
    stop_after: int | None = None  # at most this many new samples per method and condition
    caption_tokenizer: str = "auto"
    progress: bool = True
    flops: bool = True  # count each sample's prefill FLOPs (one extra prefill per sample)
