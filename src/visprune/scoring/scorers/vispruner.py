"""``vispruner``: important tokens by [CLS] attention plus diverse tokens by duplicate removal (VisPruner)."""

from __future__ import annotations

from typing import Any

import torch

from ..context import PATCH_HIDDEN, SALIENCY, ScoreContext
from ..crops import crop_split
from ..groups import group_split
from .base import Scorer, feature_layer, register_scorer

#: share of ``k`` taken by attention, the rest by diversity: the official default (``--important_ratio``
#: in ``llava/eval/model_vqa_loader.py``; the README's examples use 0.5 and 0.75)
IMPORTANT_RATIO = 0.5
#: most duplicates removed per round, as in the official loop
ROUND = 8
#: ``space`` settings: where duplicates are compared (the official code's, or the projected tokens)
SPACES = ("tower", "projected")


@register_scorer("vispruner")
class VisPrunerScorer(Scorer):
    """VisPruner (Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective
    Token Pruning in VLMs", ICCV 2025, arXiv 2412.01818 v2). Follows the official code,
    github.com/Theia-4869/VisPruner: ``llava/model/llava_arch.py``, ``LlavaMetaForCausalLM.encode_images``.

    Of the ``k`` tokens an image keeps:

    - *important*: ``int(k * important_ratio)`` tokens (rounded down, as the official
      ``important_token_num``) with the highest [CLS] attention (the ``cls`` scorer's saliency:
      the [CLS] row of the attention inside the layer whose output the language model receives,
      over the patches, heads averaged, as the official ``attentions[select_layer][:, :, 0, 1:]``
      then ``mean(dim=1)``; towers without [CLS] use the mean attention each token receives, as
      ``cls`` does);
    - *diverse*: the rest, by removing duplicates from the remaining tokens (ordered by attention,
      highest first) in rounds until ``k`` are left: split them alternately into ``a`` (even
      places) and ``b`` (odd places), score each ``a`` token by its largest cosine similarity to any
      ``b`` token, drop the ``min(8, remaining - wanted)`` highest-scoring ``a`` tokens (all of
      ``a`` if it has fewer), and continue with the other ``a`` tokens (most similar first)
      followed by ``b``.

    Similarity (``space="tower"``, default): as the official code, the cosine of the vision
    tower's hidden states at the layer the model projects for its language model
    (``image_features = hidden_states[select_layer][:, 1:]`` in ``CLIPVisionTower.feature_select``,
    L2-normalised, no layer norm; the projector runs after the selection): the model's
    ``vision_feature_layer`` (:func:`~visprune.scoring.scorers.base.feature_layer`), captured as
    ``PATCH_HIDDEN`` and aligned with the tokens the language model receives (LLaVA, LLaVA-NeXT,
    LLaVA-OneVision). Where the model's config names no feature layer the visual tokens at the cut
    are compared: those are the tower's own last outputs on IDEFICS and BLIP-2 / InstructBLIP
    (``cut="vit"``), so the official comparison too; on Qwen2-VL they are the merged (projected)
    tokens, the only per-token states there are. ``space="projected"``: the tokens the language
    model receives everywhere (visprune's earlier default; LLaVA's MLP projector is not linear, so
    the two can rank pairs differently).

    Crop by crop where the adapter tells crops apart (``ScoreContext.crops``: LLaVA-NeXT), as the
    official ``prepare_inputs_labels_for_multimodal``, which runs ``encode_images`` on the base image
    and each any-resolution crop as separate pictures, ``visual_token_num`` tokens each ("32 * 5 =
    160" in its README): the image's ``k`` is split evenly over its crops
    (:func:`~visprune.scoring.crops.crop_budgets`) and each crop runs the selection above on its
    own tokens with its share. Likewise a video whose budget splits it over temporal groups
    (``ctx.parts``, the energy budget's ``video_budget``): each group with its part
    (:func:`~visprune.scoring.groups.group_split`).

    [CLS] is never a candidate where the model drops it (LLaVA-1.5's ``default`` strategy, the
    official ``select_feature='patch'``). Sorts are stable: ties go to the lower index (the
    official code's GPU argsort leaves them open).

    Deliberate differences from the official code, forced by visprune's interface:

    - LLaVA-NeXT: a crop chooses among the tokens unpadding leaves (the official code picks on the
      whole crop grid, then loses the picks unpadding drops), so the image keeps ``k``; a crop with
      fewer tokens than its share passes the rest on.
    - An odd number of remaining tokens puts the extra one in ``a`` (the official indexing assumes
      an even count), and when ``k`` leaves no diverse tokens none are chosen (the official loop
      would fail on an empty ``b``).

    Args:
        important_ratio: share of ``k`` chosen by attention, in ``[0, 1]`` (default 0.5, official).
        space: where duplicates are compared: ``"tower"`` (default, official: the tower's feature-layer
            hidden states before the projector) or ``"projected"`` (the tokens the language model
            receives; ``vispruner:k=64,space=projected``).
        per_crop: select crop by crop where the adapter tells crops apart (default True, the
            official code's); False: the image's tokens are one set (visprune's earlier default;
            ``vispruner:k=64,per_crop=false``).
    """

    needs = frozenset({SALIENCY})

    def __init__(self, important_ratio: float = IMPORTANT_RATIO, space: str = "tower", per_crop: bool = True) -> None:
        if space not in SPACES:
            raise ValueError(f"space must be one of {', '.join(map(repr, SPACES))}, got {space!r}")
        self.space = space
        if isinstance(important_ratio, bool) or not isinstance(important_ratio, (int, float)) or not 0 <= important_ratio <= 1:
            raise ValueError(f"important_ratio must be in [0, 1], got {important_ratio!r}")
        self.important_ratio = important_ratio
        if not isinstance(per_crop, bool):
            raise ValueError(f"per_crop must be True or False, got {per_crop!r}")
        self.per_crop = per_crop

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        self.patch_layer = feature_layer(model) if self.space == "tower" else None
        self.needs = frozenset({SALIENCY, PATCH_HIDDEN} if self.patch_layer is not None else {SALIENCY})

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return ctx.require(SALIENCY, "scorer 'vispruner'").float()

    def _select_one(self, features: torch.Tensor, scores: torch.Tensor, cand: torch.Tensor, k: int) -> torch.Tensor:
        idx = cand.nonzero(as_tuple=True)[0]
        order = idx[torch.sort(scores[idx].float(), descending=True, stable=True).indices]
        n_imp = int(k * self.important_ratio)
        n_div = k - n_imp
        important, rest = order[:n_imp], order[n_imp:]
        if n_div == 0:
            return torch.sort(important).values
        f = torch.nn.functional.normalize(torch.nan_to_num(features[rest].float(), nan=0.0), dim=-1)
        sim = f @ f.T  # once: every round reads a block of it (the official loop multiplies again each round)
        place = torch.arange(rest.numel(), device=rest.device)  # rest[place] is what remains, in its order
        while place.numel() > n_div:
            drop = min(ROUND, place.numel() - n_div)
            a, b = place[0::2], place[1::2]
            dup = sim[a[:, None], b[None, :]].amax(-1)
            a = a[torch.sort(dup, descending=True, stable=True).indices[drop:]]
            place = torch.cat([a, b])
        return torch.sort(torch.cat([important, rest[place]])).values

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        cand = ctx.candidates
        compared = ctx.require(PATCH_HIDDEN, "scorer 'vispruner'") if PATCH_HIDDEN in self.needs else ctx.features
        kept = []
        for i in range(len(k)):
            split = group_split(ctx, i) or (crop_split(ctx, i, int(k[i])) if self.per_crop else None)
            parts = [(cand[i], int(k[i]))] if split is None else split
            picks = [self._select_one(compared[i], scores[i], mask, share) for mask, share in parts]
            kept.append(torch.sort(torch.cat(picks)).values)
        return kept

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(important_ratio={self.important_ratio!r}, space={self.space!r}, "
                f"per_crop={self.per_crop!r})")
