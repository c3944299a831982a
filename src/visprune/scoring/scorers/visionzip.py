"""``visionzip``: dominant tokens by [CLS] attention plus merged contextual tokens."""

from __future__ import annotations

import torch

from ... import ops
from ..context import KEYS, SALIENCY, TOWER, ScoreContext
from ..groups import group_split
from .base import Scorer, register_scorer

#: VisionZip's published split: 54 dominant + 10 contextual of 64 (108 + 20 of 128, 162 + 30 of 192).
CONTEXTUAL_SHARE = 10 / 64
SPACES = ("tower", "projected")


@register_scorer("visionzip")
class VisionZipScorer(Scorer):
    """VisionZip (Yang et al., CVPR 2025, arXiv 2412.04467), Sec. 3.2, training-free.

    Follows the official code, github.com/dvlab-research/VisionZip: ``visionzip/clip_encoder.py``,
    ``CLIPVisionTower_VisionZip.forward`` (the selection and merge), ``visionzip/utils.py``,
    ``CLIPAttention_forward`` (the merge metric), ``visionzip/main.py``, ``visionzip`` (its
    ``dominant`` counts [CLS]: ``dominant_num = dominant - 1`` patches), and
    ``visionzip/llava_arch.py``, ``encode_images_visionzip`` (the projector runs on the result).
    With ``k`` visual tokens for the language model (``k=64``: the README's
    ``dominant=54, contextual=10``):

    - ``c = min(round(k * 10 / 64), k - 1)`` contextual tokens, ``k - c`` dominant tokens: [CLS]
      and the ``k - c - 1`` patches with the highest [CLS] attention at the feature layer (the
      ``cls`` saliency, heads averaged; the official sums the heads: the same order).
    - Of the remaining patches, in their original order, ``c`` targets at the stride
      ``max(1, remaining // c)``; every other remaining patch goes to the target whose key is most
      cosine-similar. The key is the feature layer's ``k_proj`` output averaged over heads (the
      official ``metric``, ``raw_key_states.mean(1)``).
    - A contextual token is ``target + mean(assigned)`` (the official ``target_hidden +
      aggregated_hidden``, counts clamped at 1: a target with nothing assigned stays itself).
    - All of it in the vision tower's hidden space (the feature layer's hidden states, before the
      projector); the model's own projector then runs on the result.
    - The language model receives [CLS], the dominant patches in their original order, then the
      contextual tokens in target order, appended at the end. ``last_kept`` reports the dominant
      patches and the targets (``k - 1`` indices; [CLS] is not a placeholder under LLaVA's
      ``default`` strategy).

    ``positions="original"`` is refused (``prune_``): [CLS] and the appended contextual tokens have
    no original position. The tower-space path runs on single-crop LLaVA (``llava``); elsewhere
    ``prune_`` refuses it and names the variant below.

    Args:
        space: ``"tower"`` (default, as published, above) or ``"projected"``: a variant, off by
            default, for architectures without the tower-space path (Qwen2-VL, LLaVA-NeXT, BLIP-2's
            ViT cut, IDEFICS): the same selection without [CLS] (``k - c`` dominant patches), the
            scoring layer's concatenated ``k_proj`` output as the metric, each contextual token the
            plain mean ``(target + sum(assigned)) / (n + 1)`` of the projected tokens, left at its
            target's position. A video whose budget splits it over temporal groups (``ctx.parts``,
            the energy budget's ``video_budget``) is split group by group: each group's part, its
            contextual tokens merged from its own patches. The projector is not linear, so this differs from averaging before it.
    """

    needs = frozenset({SALIENCY, KEYS, TOWER})  # space="tower"; "projected" drops TOWER
    own_order = True
    projected_variant = 'VisionZipScorer(space="projected")'

    def __init__(self, space: str = "tower") -> None:
        if space not in SPACES:
            raise ValueError(f"VisionZipScorer(space={space!r}): valid spaces are {', '.join(SPACES)}")
        self.space = space
        self.own_order = space == "tower"
        self.needs = frozenset({SALIENCY, KEYS, TOWER} if self.own_order else {SALIENCY, KEYS})

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return ctx.require(SALIENCY, "scorer 'visionzip'").float()

    def _split(self, ctx: ScoreContext, scores: torch.Tensor, i: int, k: int, cand: torch.Tensor | None = None):
        """(dominant patches, targets, (others, the target each goes to)), candidate indices (among
        ``cand``, default the image's candidates)."""
        cand = ctx.candidates[i] if cand is None else cand
        n_ctx = min(int(round(k * CONTEXTUAL_SHARE)), max(k - 1, 0))
        n_dom = k - n_ctx - (1 if self.own_order else 0)  # [CLS] is the first dominant token
        masked = torch.where(cand, scores[i].float(), torch.full_like(scores[i], float("-inf"), dtype=torch.float))
        dominant = ops.keep_indices(masked[None], max(n_dom, 0))[0]
        rest_mask = cand.clone()
        rest_mask[dominant] = False
        rest = rest_mask.nonzero(as_tuple=True)[0]
        if n_ctx == 0 or rest.numel() == 0:
            return dominant, rest[:0], (rest[:0], rest[:0])
        n_ctx = min(n_ctx, rest.numel())
        step = max(rest.numel() // n_ctx, 1)
        targets = rest[::step][:n_ctx].contiguous()
        others = rest[~torch.isin(rest, targets)]
        keys = ctx.keys[i].float()
        if self.own_order:  # the official metric: keys averaged over heads
            keys = keys.view(keys.shape[0], ctx.tower.heads, -1).mean(1)
        keys = torch.nn.functional.normalize(keys, dim=-1)
        assign = (keys[others] @ keys[targets].T).argmax(-1) if others.numel() else others
        return dominant, targets, (others, assign)

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        splits = []
        for i in range(len(k)):
            groups = None if self.own_order else group_split(ctx, i)
            if groups:  # a video split over its temporal groups: each group's part, merged within the group
                splits.append(_joined([self._split(ctx, scores, i, share, mask) for mask, share in groups]))
            else:
                splits.append(self._split(ctx, scores, i, int(k[i])))
        ctx.extras["visionzip"] = splits  # per call: merge reads them back
        return [torch.sort(torch.cat(s[:2])).values for s in splits]

    def merge(self, ctx: ScoreContext, kept: list[torch.Tensor]) -> list[torch.Tensor]:
        """Contextual tokens for all targets at once (a scatter-add, no loop over tokens)."""
        splits = ctx.extras["visionzip"]
        if self.own_order:
            return [self._merge_tower(ctx, i, *split) for i, split in enumerate(splits)]
        out = []
        for i, idx in enumerate(kept):
            _, targets, (others, assign) = splits[i]
            feats = ctx.features[i, idx].clone()
            if targets.numel():
                x = ctx.features[i]
                sums = x[targets].float().index_add(0, assign, x[others].float())
                sizes = torch.bincount(assign, minlength=len(targets)).to(sums) + 1
                feats[torch.searchsorted(idx, targets)] = (sums / sizes[:, None]).to(feats.dtype)
            out.append(feats)
        return out

    def _merge_tower(self, ctx: ScoreContext, i: int, dominant, targets, others_assign) -> torch.Tensor:
        """[CLS], dominant patches in order, contextual tokens: hidden states, then the projector."""
        tower = ctx.tower
        hidden = tower.hidden[i]
        h = hidden.float()
        rows = torch.cat([torch.zeros(1, dtype=torch.long, device=h.device), tower.first + torch.sort(dominant).values])
        parts = [h[rows]]
        if targets.numel():
            others, assign = others_assign
            sums = torch.zeros(len(targets), h.shape[-1], device=h.device).index_add(0, assign, h[tower.first + others])
            counts = torch.bincount(assign, minlength=len(targets)).clamp(min=1).to(sums)
            parts.append(h[tower.first + targets] + sums / counts[:, None])
        return tower.project(torch.cat(parts).to(hidden.dtype))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(space={self.space!r})" if self.space != "tower" else super().__repr__()


def _joined(pieces: list[tuple]) -> tuple:
    """Per-group splits as one: dominant patches, targets and merged patches concatenated, each group's
    assignments offset by the targets of the groups before it."""
    dominant = torch.cat([p[0] for p in pieces])
    targets = torch.cat([p[1] for p in pieces])
    others = torch.cat([p[2][0] for p in pieces])
    offsets = torch.tensor([0] + [len(p[1]) for p in pieces[:-1]]).cumsum(0).tolist()
    assign = torch.cat([p[2][1] + off for p, off in zip(pieces, offsets)])
    return dominant, targets, (others, assign)
