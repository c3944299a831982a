"""Where each visual token of one picture lies in that picture: views (token grids) and per-token boxes.

An adapter describes what its processor and model make of a picture as *views*: grids of tokens,
each laid over a box of the picture the user passed (normalised ``x0, y0, x1, y1``), in the order the
language model receives them. A view may reach past the picture where the model sees padding (the
tokens' boxes are then clipped to it), and several views of one picture go to separate *panels*
(a base image and its crops, tiles and a thumbnail): the tiles of one panel cover the picture side by
side, while two panels show the same picture twice at different scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class View:
    """A ``rows x cols`` grid of tokens, row-major, starting at token ``start`` of the image's entry,
    laid over ``box`` of the picture; ``stride`` tokens from one row's start to the next (``cols + 1``
    where a row-end newline follows each row); drawn in panel ``panel``."""

    rows: int
    cols: int
    box: tuple[float, float, float, float]
    start: int
    panel: int = 0
    stride: int | None = None


@dataclass
class TokenBoxes:
    """``boxes[j]``: token ``j``'s ``(x0, y0, x1, y1)`` in the picture, normalised to ``[0, 1]``, NaN for
    a token that shows no part of it (a newline, a [CLS], padding); ``panel[j]``: its panel, -1 for those."""

    boxes: torch.Tensor  # [N, 4] float
    panel: torch.Tensor  # [N] long

    @classmethod
    def from_views(cls, views: list[View], n: int) -> TokenBoxes:
        boxes = torch.full((n, 4), math.nan, dtype=torch.float64)
        panel = torch.full((n,), -1, dtype=torch.long)
        for v in views:
            x0, y0, x1, y1 = v.box
            xs = torch.linspace(x0, x1, v.cols + 1, dtype=torch.float64)
            ys = torch.linspace(y0, y1, v.rows + 1, dtype=torch.float64)
            r, c = torch.meshgrid(torch.arange(v.rows), torch.arange(v.cols), indexing="ij")
            index = (v.start + r * (v.stride or v.cols) + c).flatten()
            grid = torch.stack([xs[c], ys[r], xs[c + 1], ys[r + 1]], dim=-1).reshape(-1, 4).clamp(0.0, 1.0)
            empty = (grid[:, 2] <= grid[:, 0]) | (grid[:, 3] <= grid[:, 1])  # all padding
            boxes[index[~empty]] = grid[~empty]
            panel[index[~empty]] = v.panel
        return cls(boxes=boxes, panel=panel)

    def __len__(self) -> int:
        return self.boxes.shape[0]


def fit_and_pad(picture: tuple[int, int], canvas: tuple[int, int]) -> tuple[float, float, float, float]:
    """The canvas pixels ``(x0, y0, x1, y1)`` that a ``(w, h)`` picture fills when resized to fit a
    ``(w, h)`` canvas with its aspect ratio kept and padded evenly on both sides (the any-resolution
    processors' ``_resize_for_patching`` / ``_pad_for_patching``, transformers 5.24, LLaVA-NeXT and
    LLaVA-OneVision)."""
    (w, h), (cw, ch) = picture, canvas
    if cw / w < ch / h:
        new_w, new_h = cw, min(math.ceil(h * cw / w), ch)
    else:
        new_w, new_h = min(math.ceil(w * ch / h), cw), ch
    left, top = (cw - new_w) // 2, (ch - new_h) // 2
    return left, top, left + new_w, top + new_h


def in_picture(region: tuple[float, float, float, float], placed: tuple[float, float, float, float]
               ) -> tuple[float, float, float, float]:
    """``region`` (canvas pixels) in the coordinates of the picture that fills ``placed`` (canvas pixels)."""
    px0, py0, px1, py1 = placed
    x0, y0, x1, y1 = region
    return ((x0 - px0) / (px1 - px0), (y0 - py0) / (py1 - py0), (x1 - px0) / (px1 - px0), (y1 - py0) / (py1 - py0))


def resize_crop_box(image_processor, picture: tuple[int, int]) -> tuple[float, float, float, float]:
    """The part of a ``(w, h)`` picture a CLIP-style processor shows the tower: resized (shortest edge,
    aspect kept; or to a fixed height x width), then centre-cropped to ``crop_size`` where it crops
    (``CLIPImageProcessor``, transformers 5.24)."""
    w, h = picture
    size = image_processor.size
    short = _field(size, "shortest_edge")
    if not getattr(image_processor, "do_resize", True):
        rw, rh = w, h
    elif short:
        rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    else:
        rw, rh = _field(size, "width"), _field(size, "height")
    if not getattr(image_processor, "do_center_crop", False):
        return 0.0, 0.0, 1.0, 1.0
    crop = image_processor.crop_size
    cw, ch = min(_field(crop, "width"), rw), min(_field(crop, "height"), rh)
    left, top = (rw - cw) // 2, (rh - ch) // 2
    return left / rw, top / rh, (left + cw) / rw, (top + ch) / rh


def _field(size, key: str):
    """A field of a processor's size (a ``SizeDict`` or a plain dict)."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)
