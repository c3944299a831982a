"""What a scorer or budget sees: one row per image, padded to the longest image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

# Signals an adapter can capture while the vision tower runs; a scorer lists the ones it needs.
SALIENCY = "saliency"  # [CLS]-to-token attention (or received attention for CLS-free towers)
PATCH_HIDDEN = "patch_hidden"  # vision hidden states at `text_layer`, for CLIP-space relevance
QUESTION_TEXT = "question_text"  # the question as a string, per image
QUESTION_EMBEDS = "question_embeds"  # language-model input embeddings of the question tokens
IMAGE_KEY = "image_key"  # a hash of the image's pixels, for seeded per-image randomness
KEYS = "keys"  # key vectors of the saliency layer, for similarity-based merging (VisionZip)
# Tower-space merging (VisionZip, PruMerge as published): the vision tower's feature-layer hidden
# states before the projector, [CLS] row included, and the model's own projector (TowerStates).
TOWER = "tower"
LAST_QK = "last_qk"  # full-width q/k projections of the tower's last layer, [CLS] row included (PruMerge)
SIGNALS = (SALIENCY, PATCH_HIDDEN, QUESTION_TEXT, QUESTION_EMBEDS, IMAGE_KEY, KEYS, TOWER, LAST_QK)


@dataclass
class CropStates:
    """One image's any-resolution crops as the tower saw them, every patch of every crop (LLaVA-NeXT),
    for scorers that run their tower-space path crop by crop (``Scorer.tower_crops``). Crop 0 is the
    base image, then the crops in the model's row-major order over a ``grid`` of rows x columns.

    Attributes:
        saliency: ``[n, P]`` the [CLS] attention of each patch of each crop (the ``cls`` saliency).
        keys: ``[n, P, C]`` the saliency layer's ``k_proj`` output of each patch.
        grid: ``(rows, cols)`` of the crops after the base image.
        packed: ``[n, P]`` long: each patch's position in the image's packed token sequence (what
            the unpruned model sends, the candidates' order), -1 where the model's unpadding drops it.
        newline: ``[D]`` the model's ``image_newline`` (projected space).
    """

    saliency: torch.Tensor
    keys: torch.Tensor
    grid: tuple[int, int]
    packed: torch.Tensor
    newline: torch.Tensor


@dataclass
class TowerStates:
    """The vision tower's side of one call, for scorers that merge before the projector.

    Rows are the tower's own token order ([CLS] first where the tower has one), one entry per image.
    Single-crop towers: candidate token ``j`` of the :class:`ScoreContext` is tower row ``first + j``.
    Any-resolution towers (``crops`` set): each entry stacks the image's crops, aligned with ``crops``.

    Attributes:
        hidden: ``[T, Dv]`` per image (``[n, T, Dv]``, one per crop, where ``crops`` is set): the
            hidden states of the layer whose output the model projects (``vision_feature_layer``),
            before the projector.
        first: tower row of candidate token 0 (1 when [CLS] is row 0 and not a candidate).
        has_cls: row 0 is [CLS].
        heads: attention heads of the saliency layer (for head-averaged keys).
        project: ``[M, Dv] -> [M, D]``: the model's own projector, on any hidden states.
        last_q, last_k: ``[T, C]`` per image, the tower's last layer's q/k projections (``LAST_QK``).
        crops: one :class:`CropStates` per image on any-resolution models (LLaVA-NeXT), else None.
    """

    hidden: list[torch.Tensor]
    first: int
    has_cls: bool
    heads: int
    project: Callable[[torch.Tensor], torch.Tensor]
    last_q: list[torch.Tensor] | None = None
    last_k: list[torch.Tensor] | None = None
    crops: list[CropStates] | None = None


@dataclass
class ScoreContext:
    """Inputs of scorers and budgets for ``I`` images with up to ``N`` visual tokens each.

    Attributes:
        features: ``[I, N, D]`` the visual tokens the language model would receive (projected).
        valid: ``[I, N]`` real tokens (rows are right-padded to the longest image).
        protected: ``[I, N]`` tokens that are always kept and never counted in a budget
            (a [CLS] token the model feeds on, LLaVA-NeXT's row-end "newline" tokens).
        saliency: ``[I, N]`` or None.
        patch_hidden: ``[I, N, Dv]`` or None.
        questions: one string per image, or None.
        question_embeds: one ``[Q_i, D]`` tensor per image, or None.
        image_keys: one int per image, or None.
        keys: ``[I, N, Dk]`` key vectors of the saliency layer, or None.
        tower: :class:`TowerStates` (``TOWER`` signal), or None.
        grids: ``(rows, cols)`` of each image's candidate tokens when they form one patch grid in
            row-major order (LLaVA-1.5), else None (packed any-resolution features).
        crops: ``[I, N]`` long, the crop of its image each token comes from (0 the base image, 1..
            the any-resolution crops, -1 no crop: newlines, padding), or None where the adapter does
            not tell crops apart (:attr:`~visprune.adapters.base.Encoded.crops`).
        repeats: ``[I, N]`` bool, video tokens the temporal stage dropped as repeats of the frame group
            before (``PruneConfig.temporal``): neither candidates nor counted by a budget; None: no stage.
        groups: ``[I, N]`` long, the temporal group (frame pair on the Qwen-VL family) of each token of a
            video entry, ``-1`` elsewhere (image entries, padding), from ``Encoded.thw``; None where the
            call has no video entry with a token grid.
        thw: ``(t, h, w)`` of each entry whose first ``t * h * w`` tokens are ``t`` temporal groups of an
            ``h x w`` grid in row-major order (video entries, ``Encoded.thw``), None for the others; None
            where the adapter does not say.
        parts: ``[I, G]`` of each entry's ``k``, how many tokens each temporal group keeps, where the budget
            splits videos (:meth:`~visprune.scoring.budgets.Budget.parts`), else None; set by
            :func:`~visprune.scoring.decide.decide` before it calls a scorer's own ``select``.
        config: the :class:`~visprune.PruneConfig` in force.
        extras: anything a custom scorer's adapter support put there.
    """

    features: torch.Tensor
    valid: torch.Tensor
    protected: torch.Tensor
    config: Any
    saliency: torch.Tensor | None = None
    patch_hidden: torch.Tensor | None = None
    questions: list[str] | None = None
    question_embeds: list[torch.Tensor] | None = None
    image_keys: list[int] | None = None
    keys: torch.Tensor | None = None
    grids: list[tuple[int, int]] | None = None
    tower: TowerStates | None = None
    crops: torch.Tensor | None = None
    repeats: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    thw: list[tuple[int, int, int] | None] | None = None
    parts: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    @property
    def candidates(self) -> torch.Tensor:
        """``[I, N]`` tokens a budget chooses among: valid, not protected, not a temporal repeat."""
        if self.repeats is not None:
            return self.valid & ~self.protected & ~self.repeats
        return self.valid & ~self.protected

    @property
    def counts(self) -> torch.Tensor:
        """``[I]`` number of candidate tokens per image."""
        return self.candidates.sum(-1)

    def require(self, name: str, who: str):
        value = getattr(self, {QUESTION_TEXT: "questions", IMAGE_KEY: "image_keys"}.get(name, name))
        if value is None:
            raise RuntimeError(f"{who} needs the {name!r} signal, which the adapter did not provide")
        return value
