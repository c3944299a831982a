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


def _square(image, size: int):
    """Centre square of ``image`` at ``size`` px: what a CLIP processor (resize, centre crop) shows the tower."""
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s)).resize((size, size))


def token_grid(model) -> int | None:
    """Side of the square grid the language model's tokens of one image tile, or ``None`` (not one
    square grid): the model's adapter says (``Adapter.picture_grid``)."""
    grid = get_adapter(model).picture_grid(model)
    return grid[0] if grid is not None and grid[0] == grid[1] else None


@torch.no_grad()
def kept_overlays(model, processor, run_one, items: list, methods: list, path: Path) -> bool:
    """A contact sheet: one row per item, one column per method, dropped patches dimmed.

    ``items`` are ``(image, payload, row_label, relevant_patches or None)``; ``run_one(image, payload)``
    runs the model once on that image (``payload``: whatever it needs, e.g. the question). Drawn for single-grid models (LLaVA-1.5 layout) on the
    centre square the tower sees; returns False (and draws nothing) for other models.
    """
    from .viz import contact_sheet, overlay

    grid = token_grid(model)
    if grid is None:
        return False
    size = max(224, model.config.vision_config.image_size)
    rows = []
    for image, payload, _, relevant in items:
        row = []
        for m in methods:
            kept = torch.arange(grid * grid)
            if m.config is not None:
                prune_(model, m.config, processor=processor)
                try:
                    run_one(image, payload)
                    kept = last_kept(model)[0]
                finally:
                    unprune_(model)
            row.append(overlay(_square(image, size), kept, grid, relevant))
        rows.append(row)
    contact_sheet(rows, [m.label for m in methods], [it[2] for it in items]).save(path)
    return True
