"""``visionzip``: dominant tokens by [CLS] attention plus merged contextual tokens."""

from __future__ import annotations

import math

import torch

from ... import ops
from ..context import KEYS, SALIENCY, TOWER, CropStates, ScoreContext
from ..crops import crop_budgets
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

    On LLaVA-NeXT (``llava_next``) it follows the official any-resolution path,
    ``visionzip/llava_arch.py``: ``prepare_inputs_labels_for_multimodal_visionzip`` (with
    ``spatial_unpad``), ``encode_images_visionzip_multi`` and ``restore_image_features_sorted``:

    - Every crop (the base image, then each any-resolution crop) is one picture to the steps above,
      among all its patches (before the stock unpadding). The image's ``k`` is split over its
      crops as ``scoring/crops.py`` splits it (``k // n`` each, the remainder one each to the first
      crops), each crop's share ``k_c`` as ``k`` above: ``dominant=54, contextual=10`` on every crop
      of a base + 2x2 image is ``k=320``. A crop whose share is 0 sends nothing.
    - The language model receives the base crop's tokens as above; then the other crops' dominant
      patches placed into the whole crop grid (``rows * P`` x ``cols * P`` patches) and read in its
      raster order, no unpadding and no newline tokens; then those crops' [CLS] tokens, then their
      contextual tokens, both in crop order. An image of one crop: its tokens, then the
      ``image_newline``.
    - ``last_kept`` reports positions in the stock packed sequence: the dominant patches and targets
      that the stock unpadding keeps, and the row-end newlines (protected, as for every scorer
      there); [CLS] tokens and unpadded-away patches have none (``Selection.sent`` counts what the
      language model receives).

    ``positions="original"`` is refused (``prune_``): [CLS] and the appended contextual tokens have
    no original position. The tower-space path runs on single-crop LLaVA (``llava``) and LLaVA-NeXT;
    elsewhere (LLaVA-OneVision, LLaVA-NeXT-Video, another feature strategy than ``default``, several
    feature layers) ``prune_`` refuses it and names the variant below.

    Args:
        space: ``"tower"`` (default, as published, above) or ``"projected"``: a variant, off by
            default, for architectures without the tower-space path (Qwen2-VL, LLaVA-OneVision, BLIP-2's
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
        self.tower_crops = self.own_order
        self.needs = frozenset({SALIENCY, KEYS, TOWER} if self.own_order else {SALIENCY, KEYS})

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        return ctx.require(SALIENCY, "scorer 'visionzip'").float()

    def _split(self, cand: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor, heads: int | None, k: int):
        """(dominant patches, targets, (others, the target each goes to)) among the indices ``cand``
        (bool ``[N]``) marks, by ``scores`` ``[N]`` and ``keys`` ``[N, C]`` (averaged over ``heads``,
        the official metric, when given)."""
        n_ctx = min(int(round(k * CONTEXTUAL_SHARE)), max(k - 1, 0))
        n_dom = k - n_ctx - (1 if self.own_order else 0)  # [CLS] is the first dominant token
        masked = torch.where(cand, scores.float(), torch.full_like(scores, float("-inf"), dtype=torch.float))
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
        keys = keys.float()
        if heads is not None:  # the official metric: keys averaged over heads
            keys = keys.view(keys.shape[0], heads, -1).mean(1)
        keys = torch.nn.functional.normalize(keys, dim=-1)
        assign = (keys[others] @ keys[targets].T).argmax(-1) if others.numel() else others
        return dominant, targets, (others, assign)

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        crops = ctx.tower.crops if self.own_order and ctx.tower is not None else None
        heads = ctx.tower.heads if self.own_order else None
        splits, kept = [], []
        for i in range(len(k)):
            groups = None if self.own_order else group_split(ctx, i)
            if crops is not None:
                split, idx = self._split_crops(crops[i], heads, int(k[i]))
            else:
                if groups:  # a video split over its temporal groups: each group's part, merged within the group
                    split = _joined([self._split(mask, scores[i], ctx.keys[i], heads, share) for mask, share in groups])
                else:
                    split = self._split(ctx.candidates[i], scores[i], ctx.keys[i], heads, int(k[i]))
                idx = torch.sort(torch.cat(split[:2])).values
            splits.append(split)
            kept.append(idx)
        ctx.extras["visionzip"] = splits  # per call: merge reads them back
        return kept

    def _split_crops(self, crops: CropStates, heads: int, k: int):
        """Every crop its share of ``k`` (``crop_budgets``), split among all its patches as one image
        is; the kept indices: the chosen patches where the packed sequence has them."""
        n, patches = crops.saliency.shape
        every = torch.ones(patches, dtype=torch.bool, device=crops.saliency.device)
        shares = crop_budgets(k, [patches] * n)
        splits = [self._split(every, crops.saliency[c], crops.keys[c], heads, share) for c, share in enumerate(shares)]
        chosen = torch.cat([crops.packed[c, torch.cat(s[:2])] for c, s in enumerate(splits)])
        return (shares, splits), torch.sort(chosen[chosen >= 0]).values

    def merge(self, ctx: ScoreContext, kept: list[torch.Tensor]) -> list[torch.Tensor]:
        """Contextual tokens for all targets at once (a scatter-add, no loop over tokens)."""
        splits = ctx.extras["visionzip"]
        if self.own_order and ctx.tower.crops is not None:
            return [self._merge_crops(ctx.tower, i, *split) for i, split in enumerate(splits)]
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
        cls, dom, contextual = _tower_tokens(hidden.float(), tower.first, dominant, targets, others_assign)
        return tower.project(torch.cat([cls, dom, contextual]).to(hidden.dtype))

    def _merge_crops(self, tower, i: int, shares: list[int], splits: list) -> torch.Tensor:
        """The official any-resolution order (``restore_image_features_sorted``): the base crop's
        [CLS], dominant patches and contextual tokens; then the other crops' dominant patches read in
        raster order of the whole crop grid (no unpadding, no newlines), their [CLS] tokens, their
        contextual tokens; an image of one crop: its tokens and the ``image_newline``."""
        hidden, crops = tower.hidden[i], tower.crops[i]
        h = hidden.float()
        parts = [_tower_tokens(h[c], tower.first, *split) if share else (h[c, :0],) * 3
                 for c, (share, split) in enumerate(zip(shares, splits))]
        if len(parts) == 1:
            return torch.cat([tower.project(torch.cat(parts[0]).to(hidden.dtype)), crops.newline[None].to(hidden.dtype)])
        side = math.isqrt(crops.saliency.shape[1])
        cols = crops.grid[1]
        spots, rows = [], []
        for c, split in enumerate(splits[1:], start=1):
            dominant = torch.sort(split[0]).values
            r, q = divmod(c - 1, cols)
            spots.append((r * side + dominant // side) * (cols * side) + q * side + dominant % side)
            rows.append(parts[c][1])
        order = torch.sort(torch.cat(spots)).indices
        tokens = [*parts[0], torch.cat(rows)[order], *(p[0] for p in parts[1:]), *(p[2] for p in parts[1:])]
        return tower.project(torch.cat(tokens).to(hidden.dtype))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(space={self.space!r})" if self.space != "tower" else super().__repr__()


def _tower_tokens(h: torch.Tensor, first: int, dominant, targets, others_assign):
    """One crop's ``([CLS], dominant patches in order, contextual tokens)`` in the tower's space:
    ``h`` ``[T, Dv]`` (float), candidate ``j`` at row ``first + j``."""
    cls = h[:1]
    dom = h[first + torch.sort(dominant).values]
    if not targets.numel():
        return cls, dom, h[:0]
    others, assign = others_assign
    sums = torch.zeros(len(targets), h.shape[-1], device=h.device).index_add(0, assign, h[first + others])
    counts = torch.bincount(assign, minlength=len(targets)).clamp(min=1).to(sums)
    return cls, dom, h[first + targets] + sums / counts[:, None]


def _joined(pieces: list[tuple]) -> tuple:
    """Per-group splits as one: dominant patches, targets and merged patches concatenated, each group's
    assignments offset by the targets of the groups before it."""
    dominant = torch.cat([p[0] for p in pieces])
    targets = torch.cat([p[1] for p in pieces])
    others = torch.cat([p[2][0] for p in pieces])
    offsets = torch.tensor([0] + [len(p[1]) for p in pieces[:-1]]).cumsum(0).tolist()
    assign = torch.cat([p[2][1] + off for p, off in zip(pieces, offsets)])
    return dominant, targets, (others, assign)
