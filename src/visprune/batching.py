"""Ragged per-sample budgets to a padded batch: rebuild token rows after image tokens are dropped.

Everything here stays on the tokens' device. What the host must know (where the image
placeholders are, how long the rows become) comes from :class:`PromptLayout`, the prompt's token
ids and mask read back once per call; without one, the placeholder total and the new row width
are read back instead, one small read each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .measure import clock


@dataclass
class PromptLayout:
    """A call's prompt on the host: token ids and attention mask, one list per row.

    Read once per call (``read``: a single small device-to-host copy), so that the image rows, the
    questions, the padding side and the pruned row widths need no further reads.
    """

    ids: list[list[int]]
    mask: list[list[int]]
    image_token_id: int
    read_seconds: float = 0.0  # what the read cost (part of visprune's overhead)
    #: every visual placeholder id of the prompt (images first, then e.g. Qwen's video placeholder);
    #: empty: the image placeholder only
    visual_ids: tuple[int, ...] = ()

    @classmethod
    def read(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token_id: int,
             visual_ids: tuple[int, ...] = ()) -> "PromptLayout":
        t0 = clock.now()
        ids, mask = torch.stack([input_ids, attention_mask.to(input_ids.dtype)]).tolist()
        return cls(ids, mask, int(image_token_id), clock.now() - t0, tuple(int(i) for i in visual_ids))

    @property
    def placeholder_ids(self) -> frozenset[int]:
        """The ids of every kind of visual placeholder (the image placeholder at least)."""
        return frozenset(self.visual_ids or (self.image_token_id,))

    @property
    def placeholders(self) -> list[int]:
        """Visual placeholder tokens per row (every kind: images and videos)."""
        ids = self.placeholder_ids
        return [sum(t in ids for t in row) for row in self.ids]

    def placeholders_of(self, token_id: int) -> list[int]:
        """Placeholder tokens of one kind (``token_id``) per row."""
        return [sum(t == token_id for t in row) for row in self.ids]

    @property
    def text_lengths(self) -> list[int]:
        """Attended tokens per row that are not visual placeholders."""
        ids = self.placeholder_ids
        return [sum(1 for t, m in zip(row, mask) if m and t not in ids) for row, mask in zip(self.ids, self.mask)]

    def padding_side(self) -> str:
        """As :func:`padding_side`, from the host copy."""
        if not self.mask or not self.mask[0]:
            return "left"
        starts = any(m[0] == 0 for m in self.mask)
        ends = any(m[-1] == 0 for m in self.mask)
        return "right" if ends and not starts else "left"

    def pruned_width(self, image_rows: list[int], kept_per_image: list[int]) -> int:
        """The longest row once each image keeps ``kept_per_image`` of its placeholders."""
        lengths = self.text_lengths
        for row, k in zip(image_rows, kept_per_image):
            lengths[row] += k
        return max(lengths, default=0)


def padding_side(attention_mask: torch.Tensor) -> str:
    """``"right"`` if some row ends in padding and none starts with it, else ``"left"``."""
    if attention_mask.shape[1] == 0:
        return "left"
    starts, ends = torch.stack([(attention_mask[:, 0] == 0).any(), (attention_mask[:, -1] == 0).any()]).tolist()
    return "right" if ends and not starts else "left"


def keep_positions(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_token_id: int,
    image_token_keep: torch.Tensor,
    placeholders: int | None = None,
) -> torch.Tensor:
    """``[B, L]`` bool: the positions that survive.

    Text tokens survive unless they are padding; image placeholder tokens survive where
    ``image_token_keep`` says so. ``image_token_keep`` has one entry per image placeholder, in the
    row-major order in which the model scatters image features into the sequence.
    ``placeholders``: their total if the host knows it (else it is read back for the check).
    """
    n = int((input_ids == image_token_id).sum()) if placeholders is None else placeholders
    if n != image_token_keep.numel():
        raise ValueError(
            f"the prompt has {n} image placeholder tokens but the images give "
            f"{image_token_keep.numel()} features; build inputs with the model's processor"
        )
    return keep_positions_by_kind(input_ids, attention_mask, {image_token_id: image_token_keep}, {image_token_id: n})


def keep_positions_by_kind(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_keep: dict[int, torch.Tensor],
    placeholders: dict[int, int] | None = None,
) -> torch.Tensor:
    """:func:`keep_positions` for prompts with several kinds of visual placeholder (Qwen's images
    and videos): ``token_keep`` maps each placeholder id to one bool per placeholder of that id,
    in the row-major order in which the model scatters that kind's features (each kind is
    scattered on its own). ``placeholders``: each kind's total if the host knows it."""
    keep = attention_mask.bool()
    for token_id, mask in token_keep.items():
        is_kind = input_ids == token_id
        n = int(is_kind.sum()) if placeholders is None or token_id not in placeholders else placeholders[token_id]
        if n != mask.numel():
            raise ValueError(
                f"the prompt has {n} placeholder tokens of id {token_id} but the inputs give "
                f"{mask.numel()} features for them; build inputs with the model's processor"
            )
        keep = keep & ~is_kind
        if n:
            order = (is_kind.flatten().long().cumsum(0) - 1).clamp_min(0).view_as(is_kind)  # placeholder number
            keep = keep | (is_kind & mask.to(is_kind.device)[order])
    return keep


class RowPlan:
    """Where each kept entry of a ``[B, L]`` row goes in the shortened, re-padded rows.

    Made once per call and shared by every per-token tensor (ids, mask, labels, positions).
    """

    def __init__(self, keep: torch.Tensor, side: str = "left", width: int | None = None):
        """``width``: the longest kept row if the host knows it (else it is read back)."""
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        lengths = keep.sum(1)
        if width is None:
            width = int(lengths.max()) if lengths.numel() else 0
        self.width = width
        rank = keep.long().cumsum(1) - 1
        if side == "left":
            rank = rank + (self.width - lengths).unsqueeze(1)
        self.dest = torch.where(keep, rank, self.width)  # dropped entries go to a spare column

    def gather(self, values: torch.Tensor, pad_value) -> torch.Tensor:
        """The kept entries of each row of ``values`` (``[B, L, ...]``); ``pad_value`` may be a
        number or a 0-dim tensor (then nothing is read back)."""
        out = values.new_empty((values.shape[0], self.width + 1, *values.shape[2:]))
        out.fill_(pad_value)
        index = self.dest.view(*self.dest.shape, *([1] * (values.dim() - 2))).expand_as(values)
        return out.scatter_(1, index, values)[:, : self.width]


def gather_rows(values: torch.Tensor, keep: torch.Tensor, pad_value, side: str = "left") -> torch.Tensor:
    """The kept entries of each row of ``values`` (``[B, L, ...]``), re-padded on ``side``."""
    return RowPlan(keep, side).gather(values, pad_value)
