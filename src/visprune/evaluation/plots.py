"""Pictures of a run: accuracy against FLOPs with the Pareto front, and overlays of kept tokens."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..adapters import get_adapter
from ..transform import last_kept, prune_, unprune_


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows no other row beats on both FLOPs share (lower) and accuracy (higher), by FLOPs."""
    pts = [r for r in rows if r.get("flops_ratio") is not None and r.get("accuracy") is not None]
    front, best = [], -math.inf
    for r in sorted(pts, key=lambda r: (r["flops_ratio"], -r["accuracy"])):
        if r["accuracy"] > best:
            front.append(r)
            best = r["accuracy"]
    return front


def plot_accuracy_vs_flops(rows: list[dict], path: Path, title: str, ylabel: str = "accuracy",
                           front: bool = False) -> None:
    """Scatter of accuracy against the FLOPs share of the unpruned model, one labelled point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pts = [r for r in rows if r.get("flops_ratio") is not None and r.get("accuracy") is not None]
    families = list(dict.fromkeys(r["method"].split(":")[0] for r in pts))
    for i, fam in enumerate(families):
        mine = sorted((r for r in pts if r["method"].split(":")[0] == fam), key=lambda r: r["flops_ratio"])
        xs, ys = [r["flops_ratio"] for r in mine], [r["accuracy"] for r in mine]
        colour = plt.cm.tab10(i % 10)
        if front:  # a sweep: one line per method family, points labelled by their budget
            ax.plot(xs, ys, marker="o", markersize=5, color=colour, label=fam)
            for r in mine:
                ax.annotate(r["method"].partition(":")[2], (r["flops_ratio"], r["accuracy"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        else:
            ax.scatter(xs, ys, s=36, color=colour)
            for r in mine:
                ax.annotate(r["method"], (r["flops_ratio"], r["accuracy"]), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
    if front:
        best = pareto_front(rows)
        ax.step([r["flops_ratio"] for r in best], [r["accuracy"] for r in best], where="post", color="grey",
                linestyle="--", linewidth=1, label="Pareto front")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("FLOPs share of unpruned (prefill, counted)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


@torch.no_grad()
def kept_overlays(model, processor, run_one, items: list, methods: list, path: Path) -> bool:
    """A contact sheet: one row per item, one column per method, dropped tokens dimmed.

    ``items`` are ``(image, payload, row_label, relevant_patches or None)``; ``run_one(image, payload)``
    runs the model once on that image (``payload``: whatever it needs, e.g. the question). Each token is
    drawn where the model's adapter says it lies in the picture (``Adapter.token_boxes``), one panel per
    view of the picture (a base image and its crops, tiles and a thumbnail: ``docs/overlays.md``);
    returns False (and draws nothing) where the adapter cannot say (BLIP-2's query cut, Gemma 3's
    pan-and-scan).
    """
    from .viz import contact_sheet, overlay

    adapter = get_adapter(model)
    # each method's tokens (BLIP-2: its cut); the unpruned column is drawn as the first pruned method sees it
    reference = next((m.config for m in methods if m.config is not None), None)
    laid = [[adapter.token_boxes(model, processor, image, m.config or reference) for m in methods]
            for image, *_ in items]
    if not laid or any(b is None for row in laid for b in row):
        return False
    size = max(224, tower_side(model))
    rows = []
    for (image, payload, _, relevant), row_boxes in zip(items, laid):
        row = []
        for m, boxes in zip(methods, row_boxes):
            kept = torch.arange(len(boxes))
            if m.config is not None:
                prune_(model, m.config, processor=processor)
                try:
                    run_one(image, payload)
                    kept = last_kept(model)[0]
                finally:
                    unprune_(model)
            row.append(overlay(image, boxes, kept, relevant, size))
        rows.append(row)
    contact_sheet(rows, [m.label for m in methods], [it[2] for it in items]).save(path)
    return True


def tower_side(model) -> int:
    """The side of the square the vision tower takes, in pixels (0 where the config does not say)."""
    size = getattr(getattr(model.config, "vision_config", None), "image_size", 0) or 0
    return size if isinstance(size, int) else int(size[0])
