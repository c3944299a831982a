"""``visprune demo``: every headline method on held-out shapes questions, side by side.

Accuracy, kept tokens, counted FLOPs (prefill: vision tower, scoring, language model), latency
ratio against the unpruned model measured in the same run, and grounding recall (share of the
question-relevant patches, known from the scene generator, that the method kept). Writes a table,
``results.json`` (with every config), a plot of accuracy against FLOPs and overlay pictures. It is
``visprune eval --task shapes-vqa`` (:mod:`visprune.evaluation`) with the per-sample records in
``out/samples``, run afresh each time.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import torch

from ..methods import DEFAULT_METHODS, Method

OVERLAY_METHODS = 4  # columns of the overlay sheet: the first methods of the list


def default_model_kind() -> str:
    """The trained VLM when it exists, else its trained tower alone, else random weights."""
    from .. import shapes

    if (shapes.CHECKPOINT / "config.json").is_file():
        return "shapes"
    return "tower" if (shapes.clip_path() / "config.json").is_file() else "random"


def plot(rows: list[dict], path: Path, title: str) -> None:
    from ..evaluation.plots import plot_accuracy_vs_flops

    plot_accuracy_vs_flops(rows, path, title)


def overlays(model, processor, samples, methods: list[Method], path: Path) -> None:
    from .. import shapes
    from ..evaluation.plots import kept_overlays

    items = [(s.image, s.question, f"{s.question}  ({s.answer})", s.relevant_patches) for s in samples]
    kept_overlays(model, processor, lambda image, q: shapes.answer(model, processor, image, q), items, methods, path)


def run(
    n: int = 100,
    seed: int = 12345,
    out: str | Path = "visprune-demo",
    methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
    model_kind: str | None = None,
    timing: int = 10,
    repeats: int = 3,
    progress: bool = True,
) -> list[dict]:
    """Run the demo and write its results to ``out``; returns the result rows."""
    from .. import shapes
    from ..evaluation import EvalSettings, build_task, parse_methods
    from ..evaluation import run as run_eval
    from ..evaluation.models import load_model
    from ..evaluation.runner import with_text_encoder
    from ..evaluation.summary import table

    parsed = parse_methods(list(methods))  # fail on a bad spec before loading anything
    task = build_task("shapes-vqa", n=n, seed=seed)
    model_kind = model_kind or default_model_kind()
    model, processor, text_encoder = load_model(model_kind)
    trained = model_kind == "shapes"
    torch.manual_seed(0)
    samples = shapes.make_samples(n=n, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if model_kind == "tower":
        print("NOTE: no trained shapes VLM yet; using its trained vision tower with an UNTRAINED language model.")
        print("      Accuracy is meaningless; kept tokens, grounding recall, FLOPs and latency are real.")
    elif not trained:
        print("NOTE: no trained shapes checkpoint found; using a RANDOM-WEIGHT LLaVA. Accuracy is meaningless;")
        print("      kept tokens, FLOPs and latency are real. Train one with scripts/train_shapes.py.")
    # The demo is `visprune eval` on shapes-vqa; its per-sample records go to out/samples. A demo
    # always starts afresh (the model may have been retrained since the last one), so no resuming.
    for stale in ("samples", "ranks", "run.json", "summary.json", "summary.md"):
        target = out / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    settings = EvalSettings(model=model_kind, task=task, methods=parsed, out=out, device="cpu", timing=timing,
                            repeats=repeats, progress=progress)
    summary = run_eval(settings, loaded=(model, processor, text_encoder))
    rows = summary["methods"]
    md = table(summary)  # the eval summary's table: accuracy with its interval, the difference from unpruned
    print(md)
    title = f"shapes proving ground, n={n}, seed={seed}, model={model_kind}"
    plot(rows, out / "accuracy_vs_flops.png", title)
    shown = with_text_encoder(parsed[:OVERLAY_METHODS], text_encoder)
    overlays(model, processor, samples[:4], shown, out / "overlays.png")
    meta = {
        "model": model_kind,
        "trained": trained,
        "n": n,
        "seed": seed,
        "timing_samples": min(timing, n),
        "repeats": repeats,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    (out / "results.md").write_text(f"{title}\n\n{md}\n")
    print(f"wrote {out}/results.json, results.md, accuracy_vs_flops.png, overlays.png")
    return rows
