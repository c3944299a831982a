"""Ragged per-sample budgets to a padded batch: rebuild token rows after image tokens are dropped."""

from __future__ import annotations

import torch


def padding_side(attention_mask: torch.Tensor) -> str:
    """``"right"`` if some row ends in padding and none starts with it, else ``"left"``."""
    if attention_mask.shape[1] == 0:
        return "left"
    starts = (attention_mask[:, 0] == 0).any()
    ends = (attention_mask[:, -1] == 0).any()
    return "right" if bool(ends) and not bool(starts) else "left"


def keep_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token_id: int, image_token_keep: torch.Tensor
) -> torch.Tensor:
    """``[B, L]`` bool: the positions that survive.

    Text tokens survive unless they are padding; image placeholder tokens survive where
    ``image_token_keep`` says so. ``image_token_keep`` has one entry per image placeholder, in the
    row-major order in which the model scatters image features into the sequence.
    """
    is_image = input_ids == image_token_id
    keep = attention_mask.bool() & ~is_image
    rows, cols = is_image.nonzero(as_tuple=True)
    if rows.numel() != image_token_keep.numel():
        raise ValueError(
            f"the prompt has {rows.numel()} image placeholder tokens but the images give "
            f"{image_token_keep.numel()} features; build inputs with the model's processor"
        )
    keep[rows[image_token_keep], cols[image_token_keep]] = True
    return keep


def gather_rows(values: torch.Tensor, keep: torch.Tensor, pad_value, side: str = "left") -> torch.Tensor:
    """The kept entries of each row of ``values`` (``[B, L, ...]``), re-padded on ``side``."""
    lengths = keep.sum(1)
    width = int(lengths.max()) if lengths.numel() else 0
    out = values.new_full((values.shape[0], width, *values.shape[2:]), pad_value)
    rank = keep.long().cumsum(1) - 1
    if side == "left":
        rank = rank + (width - lengths).unsqueeze(1)
    rows, cols = keep.nonzero(as_tuple=True)
    out[rows, rank[rows, cols]] = values[rows, cols]
    return out
