"""Pictures of what a pruner kept: dropped patches dimmed, question-relevant patches outlined."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, ImageDraw


def overlay(
    image: Image.Image,
    boxes,
    kept: torch.Tensor | Sequence[int],
    relevant: Sequence[bool] | torch.Tensor | None = None,
    size: int = 224,
    dim: float = 0.25,
    pad: int = 4,
) -> Image.Image:
    """The kept tokens of one picture: one ``size x size`` panel per view (``boxes``, the adapter's
    :class:`~visprune.adapters.boxes.TokenBoxes`), side by side, dropped tokens dimmed.

    A panel shows the part of ``image`` its tokens cover (a LLaVA-1.5 centre crop: the square the tower
    sees; elsewhere the whole picture), fitted into the square; each token is the box it covers. Tokens
    in ``relevant`` (ground truth, one bool per content token of a panel with that many tokens) get a
    yellow outline, so a picture shows at a glance which evidence survived.
    """
    img = image.convert("RGB")
    keep = torch.zeros(len(boxes), dtype=torch.bool)
    keep[torch.as_tensor(list(kept) if not isinstance(kept, torch.Tensor) else kept, dtype=torch.long)] = True
    panels = [_panel(img, boxes.boxes[boxes.panel == p], keep[boxes.panel == p], relevant, size, dim)
              for p in sorted(set(boxes.panel[boxes.panel >= 0].tolist()))]
    out = Image.new("RGB", (len(panels) * (size + pad) - pad, size), "white")
    for i, pic in enumerate(panels):
        out.paste(pic, (i * (size + pad), 0))
    return out


def _panel(img: Image.Image, boxes: torch.Tensor, keep: torch.Tensor, relevant, size: int, dim: float) -> Image.Image:
    w, h = img.size
    x0, y0 = boxes[:, 0].min().item(), boxes[:, 1].min().item()
    x1, y1 = boxes[:, 2].max().item(), boxes[:, 3].max().item()
    crop = img.crop((int(x0 * w + 1e-6), int(y0 * h + 1e-6), round(x1 * w), round(y1 * h)))
    scale = size / max(crop.size)
    pw, ph = max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale))
    left, top = (size - pw) // 2, (size - ph) // 2
    shown = crop.resize((pw, ph))
    dark = Image.blend(shown, Image.new("RGB", shown.size, (0, 0, 0)), 1.0 - dim)
    # token boxes in the panel's pixels
    rects = [((bx0 - x0) / (x1 - x0) * pw, (by0 - y0) / (y1 - y0) * ph, (bx1 - x0) / (x1 - x0) * pw - 1,
              (by1 - y0) / (y1 - y0) * ph - 1) for bx0, by0, bx1, by1 in boxes.tolist()]
    mask = Image.new("L", shown.size, 0)
    draw_mask = ImageDraw.Draw(mask)
    for i in torch.nonzero(keep).flatten().tolist():
        draw_mask.rectangle(rects[i], fill=255)
    pic = Image.composite(shown, dark, mask)
    if relevant is not None and len(relevant) == len(rects):
        draw = ImageDraw.Draw(pic)
        for i, rel in enumerate(list(relevant)):
            if bool(rel):
                draw.rectangle(rects[i], outline=(255, 220, 0))
    out = Image.new("RGB", (size, size), "white")
    out.paste(pic, (left, top))
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
