"""``visprune demo``: every headline method on held-out shapes questions, side by side.

Accuracy, kept tokens, counted FLOPs (prefill: vision tower, scoring, language model), latency
ratio against the unpruned model measured in the same run, and grounding recall (share of the
question-relevant patches, known from the scene generator, that the method kept). Writes a table,
``results.json`` (with every config), a plot of accuracy against FLOPs and overlay pictures.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from . import last_kept, prune_, unprune_
from .flops import count_flops
from .methods import Method, parse_method

DEFAULT_METHODS = (
    "none",
    "atp:keep=0.25",
    "atp:keep=0.125",
    "e-adaprune:energy=0.9",
    "atp:budget=energy,energy=0.9",
    "random:keep=0.25",
    "random:keep=0.125",
)
OVERLAY_METHODS = 4  # columns of the overlay sheet: the first methods of the list


def load_model(kind: str):
    """(model, processor, text_encoder, trained) for ``shapes`` or the ``random`` fallback."""
    from . import shapes

    if kind == "shapes":
        model, processor = shapes.load()
        return model, processor, str(shapes.clip_path()), True
    if kind == "random":
        from . import random_models

        model, processor = random_models.llava(
            image=shapes.IMAGE_SIZE, vision=(64, 4), text=(128, 4), tok=shapes.build_tokenizer()
        )
        processor.chat_template = shapes.build_processor(processor.tokenizer).chat_template
        return model, processor, None, False
    raise ValueError(f"unknown demo model {kind!r}; valid: shapes, random")


def default_model_kind() -> str:
    from . import shapes

    return "shapes" if (shapes.CHECKPOINT / "config.json").is_file() else "random"


def _inputs(processor, sample):
    from . import shapes

    return processor(text=shapes.prompt(processor, sample.question), images=sample.image, return_tensors="pt")


@torch.no_grad()
def evaluate(model, processor, samples, method: Method, timing: int, repeats: int, progress: bool = True) -> dict:
    """Accuracy, kept tokens, FLOPs, latency and grounding recall of one method on ``samples``."""
    from tqdm.auto import tqdm

    from . import shapes

    if method.config is not None:
        prune_(model, method.config, processor=processor)
    try:
        correct, kept_counts, recalls, flops, per_type = [], [], [], [], {}
        for s in tqdm(samples, desc=f"{method.label:<30}", disable=not progress, leave=False):
            pred = shapes.answer(model, processor, s.image, s.question)
            kept = last_kept(model)[0] if method.config is not None else torch.arange(shapes.NUM_PATCHES)
            rel = torch.as_tensor(s.relevant_patches, dtype=torch.bool)
            ok = pred == s.answer
            correct.append(ok)
            per_type.setdefault(s.qtype, []).append(ok)
            kept_counts.append(len(kept))
            if rel.any():
                recalls.append(float(rel[kept].sum()) / float(rel.sum()))
            flops.append(count_flops(model, **_inputs(processor, s))[0])
        seconds = []
        for s in samples[:timing]:
            inputs = _inputs(processor, s)
            model.generate(**inputs, max_new_tokens=2, do_sample=False)  # warm-up
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.generate(**inputs, max_new_tokens=2, do_sample=False)
                runs.append(time.perf_counter() - t0)
            seconds.append(statistics.median(runs))
    finally:
        if method.config is not None:
            unprune_(model)
    return {
        "method": method.label,
        "config": method.to_dict()["config"],
        "n": len(samples),
        "accuracy": sum(correct) / len(correct),
        "accuracy_by_type": {k: sum(v) / len(v) for k, v in sorted(per_type.items())},
        "kept_tokens": {"mean": statistics.mean(kept_counts), "min": min(kept_counts), "max": max(kept_counts)},
        "grounding_recall": statistics.mean(recalls) if recalls else None,
        "flops_per_sample": statistics.mean(flops),
        "latency_s": sum(seconds),
    }


def table(rows: list[dict]) -> str:
    head = "| method | accuracy | kept tokens (mean) | FLOPs share | latency ratio | grounding recall |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['accuracy']:.3f} | {r['kept_tokens']['mean']:.1f} | {r['flops_ratio']:.3f} | "
            f"{r['latency_ratio']:.3f} | {r['grounding_recall']:.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in rows:
        ax.scatter(r["flops_ratio"], r["accuracy"], s=36)
        ax.annotate(r["method"], (r["flops_ratio"], r["accuracy"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("FLOPs share of unpruned (prefill, counted)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


@torch.no_grad()
def overlays(model, processor, samples, methods: list[Method], path: Path) -> None:
    from . import shapes
    from .viz import contact_sheet, overlay

    rows, names = [], []
    for s in samples:
        row = []
        for m in methods:
            if m.config is None:
                kept = torch.arange(shapes.NUM_PATCHES)
            else:
                prune_(model, m.config, processor=processor)
                try:
                    shapes.answer(model, processor, s.image, s.question)
                    kept = last_kept(model)[0]
                finally:
                    unprune_(model)
            row.append(overlay(s.image, kept, shapes.GRID, s.relevant_patches))
        rows.append(row)
        names.append(f"{s.question}  ({s.answer})")
    contact_sheet(rows, [m.label for m in methods], names).save(path)


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
    from . import shapes

    parsed = [parse_method(m) for m in methods]  # fail on a bad spec before loading anything
    if not any(m.config is None for m in parsed):
        parsed.insert(0, parse_method("none"))
    model_kind = model_kind or default_model_kind()
    model, processor, text_encoder, trained = load_model(model_kind)
    if text_encoder is not None:
        parsed = [
            Method(m.label, m.config.replace(text_encoder=text_encoder))
            if m.config is not None and m.config.scorer_name in ("atp", "text") else m
            for m in parsed
        ]
    torch.manual_seed(0)
    samples = shapes.make_samples(n=n, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not trained:
        print("NOTE: no trained shapes checkpoint found; using a RANDOM-WEIGHT LLaVA. Accuracy is meaningless;")
        print("      kept tokens, FLOPs and latency are real. Train one with scripts/train_shapes.py.")
    rows = [evaluate(model, processor, samples, m, timing, repeats, progress) for m in parsed]
    ref = next(r for r in rows if r["config"] is None)
    for r in rows:
        r["flops_ratio"] = r["flops_per_sample"] / ref["flops_per_sample"]
        r["latency_ratio"] = r["latency_s"] / ref["latency_s"]
    md = table(rows)
    print(md)
    title = f"shapes proving ground, n={n}, seed={seed}, model={model_kind}"
    plot(rows, out / "accuracy_vs_flops.png", title)
    overlays(model, processor, samples[:4], parsed[:OVERLAY_METHODS], out / "overlays.png")
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
