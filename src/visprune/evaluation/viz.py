"""Pictures of what a pruner kept: dropped patches dimmed, question-relevant patches outlined."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, ImageDraw


def overlay(
    image: Image.Image,
    kept: torch.Tensor | Sequence[int],
    grid: int,
    relevant: Sequence[bool] | torch.Tensor | None = None,
    dim: float = 0.25,
) -> Image.Image:
    """``image`` (square, ``grid x grid`` patches, row-major) with dropped patches dimmed.

    Kept patches stay as they are; patches in ``relevant`` (ground truth, one bool per patch) get
    a yellow outline, so a picture shows at a glance which evidence survived.
    """
    img = image.convert("RGB")
    w, h = img.size
    pw, ph = w / grid, h / grid
    keep = torch.zeros(grid * grid, dtype=torch.bool)
    keep[torch.as_tensor(list(kept) if not isinstance(kept, torch.Tensor) else kept, dtype=torch.long)] = True
    dark = Image.blend(img, Image.new("RGB", img.size, (0, 0, 0)), 1.0 - dim)
    mask = Image.new("L", img.size, 0)
    draw_mask = ImageDraw.Draw(mask)
    for i in torch.nonzero(keep).flatten().tolist():
        r, c = divmod(i, grid)
        draw_mask.rectangle([c * pw, r * ph, (c + 1) * pw - 1, (r + 1) * ph - 1], fill=255)
    out = Image.composite(img, dark, mask)
    if relevant is not None:
        draw = ImageDraw.Draw(out)
        for i, rel in enumerate(list(relevant)):
            if bool(rel):
                r, c = divmod(i, grid)
                draw.rectangle([c * pw, r * ph, (c + 1) * pw - 1, (r + 1) * ph - 1], outline=(255, 220, 0))
    return out


def contact_sheet(rows: list[list[Image.Image]], labels: list[str], row_labels: list[str], pad: int = 6) -> Image.Image:
    """A grid of equally sized pictures with column and row captions."""
    w, h = rows[0][0].size
    top, left = 30, 0
    sheet = Image.new("RGB", (left + len(labels) * (w + pad) + pad, top + len(rows) * (h + 34) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for j, label in enumerate(labels):
        draw.text((left + pad + j * (w + pad), 8), label, fill="black")
    for i, row in enumerate(rows):
        y = top + i * (h + 34)
        for j, pic in enumerate(row):
            sheet.paste(pic, (left + pad + j * (w + pad), y))
        draw.text((left + pad, y + h + 4), row_labels[i][:110], fill="black")
    return sheet
