"""``cdpruner``: instruction-conditioned DPP selection of the projected visual tokens (CDPruner)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..context import ScoreContext
from ..crops import crop_split
from ..groups import group_split
from .base import feature_layer, register_scorer
from .clip_text import ClipTextScorer, QuestionTermScorer

#: added to the numerator of the min-max relevance, as the official code does, so the least relevant
#: token keeps a small positive weight (and a non-zero kernel diagonal)
RELEVANCE_OFFSET = 1e-6
#: a residual variance at or below this share of the item's own kernel diagonal counts as zero: the
#: chosen items already span it (the kernel's rank is below ``k``). Chen et al.'s fast greedy MAP stops
#: there (their epsilon 1e-10); a budget must still be met, so the remaining picks follow the residuals.
EXHAUSTED = 1e-10
#: a residual variance below this share of the image's largest kernel diagonal entry counts as zero
#: too: float32 inputs do not resolve it (the same image's kernel differs by about 1e-6 of that entry
#: between a batched and a lone run of the vision tower), so the picks it would order go by index and
#: a batched call selects what each image would alone. It binds only once every remaining gain is
#: that small (kernels of lower rank than ``k``: duplicate tokens, tiny test models)
RESOLUTION = 1e-5
#: ``relevance_layer`` settings: the layer the model projects for its language model (the official
#: code's), or ``PruneConfig.text_layer`` (the ``text`` scorer's and ATP's; visprune's earlier default)
RELEVANCE_LAYERS = ("feature", "text_layer")


def greedy_map(kernel: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
    """Greedy MAP inference of a DPP, ``k[i]`` items per image, ascending indices per image.

    Chen, Zhang, Zhou, "Fast Greedy MAP Inference for Determinantal Point Process to Improve
    Recommendation Diversity" (NeurIPS 2018), Algorithm 1: each step adds the item with the largest
    residual variance ``d_j`` (the marginal gain of ``log det L_Y``), then updates every residual
    with one new row of the incremental Cholesky factor,
    ``e_n = (L_jn - <c_j, c_n>) / sqrt(d_j)``, ``d_n -= e_n ** 2``. All images of the batch advance
    together; the greedy order does not depend on ``k``, so per-image budgets take a prefix of it.
    Ties go to the lower index. A residual at most ``EXHAUSTED`` of the item's own diagonal entry
    (already spanned: the kernel's rank is below ``k``), or below ``RESOLUTION`` of the largest
    one among the image's candidates (below float32 resolution), counts as zero: such a pick adds no update, and the
    image's later picks among zero residuals go by index (the official code would divide by zero,
    or follow rounding noise, there; it does not arise at real sizes, where the model width
    exceeds ``k``).

    Args:
        kernel: ``[I, N, N]`` positive semi-definite DPP kernels.
        candidates: ``[I, N]`` items each image may choose.
        k: ``[I]`` items per image, at most its candidate count.
    """
    n_img, n = candidates.shape
    kmax = int(k.max()) if len(k) else 0
    rows = torch.arange(n_img, device=kernel.device)
    d = torch.diagonal(kernel, dim1=1, dim2=2).clone()
    floor = torch.maximum(EXHAUSTED * d, RESOLUTION * d.masked_fill(~candidates, 0).amax(-1, keepdim=True))
    d = torch.where(d > floor, d, torch.zeros_like(d))
    factor = kernel.new_zeros(kmax, n_img, n)
    available = candidates.clone()
    order = torch.empty(n_img, kmax, dtype=torch.long, device=kernel.device)
    lowest, never = torch.finfo(d.dtype).min, torch.full_like(d, -math.inf)
    for t in range(kmax):
        pick = torch.where(available, d.clamp(min=lowest), never).argmax(-1)  # the first index among ties
        order[:, t] = pick
        dj = d[rows, pick]
        done = factor[:t, rows, pick]  # [t, I]: the picked item's factor column so far
        e = (kernel[rows, pick] - torch.einsum("ti,tin->in", done, factor[:t])) / dj.clamp(min=1e-30).sqrt()[:, None]
        e = torch.where((dj > floor[rows, pick])[:, None], e, torch.zeros_like(e))
        factor[t] = e
        d = d - e * e
        d = torch.where(d > floor, d, torch.zeros_like(d))
        available[rows, pick] = False
    return [torch.sort(order[i, : int(k[i])]).values for i in range(n_img)]


@register_scorer("cdpruner")
class CDPrunerScorer(QuestionTermScorer):
    """CDPruner (Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for
    Token Pruning in MLLMs", NeurIPS 2025, arXiv 2506.10967): a determinantal point process over the
    visual tokens, conditioned on the instruction. Follows the official code, github.com/Theia-4869/CDPruner:
    ``llava/model/llava_arch.py``, ``LlavaMetaForCausalLM.encode_images`` (kernel and greedy MAP), with
    the relevance inputs of ``llava/model/multimodal_encoder/clip_encoder.py``, ``CLIPVisionTower.forward``.

    - Similarity ``S``: cosine similarity of the projected visual tokens (what the language model
      receives), as in the official code.
    - Relevance ``r``: the question relevance ATP uses: CLIP's patch-question similarity (scorer
      ``text``) when there is a CLIP text encoder (``PruneConfig.text_encoder``; the default
      ``"auto"`` finds the partner the model's folder ships), else the weight-free ``lmtext``.
      ``visprune.last_selection(model).relevance`` says which ran. The CLIP similarity is taken, as
      in the official ``CLIPVisionTower.forward``, on the hidden states of the layer the model feeds
      its projector (``image_outputs = feature_select(...)``: ``hidden_states[mm_vision_select_layer]``,
      ``-2`` on LLaVA-1.5, [CLS] dropped by ``select_feature='patch'``) through CLIP's
      ``post_layernorm`` and ``visual_projection``: here the model's ``vision_feature_layer``
      (:func:`~visprune.scoring.scorers.base.feature_layer`; ``-1``, the tower's last layer, where
      the config names none, as IDEFICS), the patches aligned with the tokens the language model
      receives. The official code *negates* the CLIP similarity (relevance ``= -cos``), and so
      does this scorer on the ``text`` scorer's output (``PruneConfig.text_sign=-1`` therefore
      gives the unnegated similarity); ``lmtext`` is used as it is (higher = more relevant). Then
      min-max normalised as the official code does, ``(r - min r + 1e-6) / (max r - min r)``; an
      image whose relevance is flat gets ``r = 1``.
    - A question longer than the CLIP text tower's positions (77) is embedded as the official
      ``CLIPVisionTower.forward`` does (:meth:`ClipTextScorer.segment_embeddings`: tokenised once,
      zero-padded to a multiple of 77, cut into 77-token segments), and the relevance is the mean
      over segments of the negated similarity (``relevance = (-relevance).mean(dim=-1)``).
    - Kernel ``L = diag(r) S diag(r)``; the kept tokens are the greedy MAP of the DPP
      (:func:`greedy_map`: Chen et al.'s incremental Cholesky, as the official loop), ``k`` per image.
    - Crop by crop where the adapter tells crops apart (``ScoreContext.crops``: LLaVA-NeXT), as the
      official ``prepare_inputs_labels_for_multimodal``, which runs ``encode_images`` on the base
      image and each any-resolution crop as separate pictures, ``visual_token_num`` tokens each
      ("32 * 5 = 160" in its README) and the relevance min-max over all of them: the image's ``k``
      is split evenly over its crops (:func:`~visprune.scoring.crops.crop_budgets`) and one DPP
      runs in each crop (its kernel restricted to the crop's tokens), ``r`` normalised over the image.
    - Videos whose budget splits them over temporal groups (``ctx.parts``: the energy budget's
      ``video_budget``): one DPP per group with the group's part (:func:`~visprune.scoring.groups.group_split`),
      ``r`` normalised over the video; without a split, one DPP over the clip (per frame on
      LLaVA-NeXT-Video, whose frames are crops).

    ``__call__`` returns ``r`` (for pictures and score-based budgets such as ``iqr``); the selection
    is :meth:`select`.

    Deliberate differences from the official code:

    - Min-max is taken per image over its candidate tokens, not over every image of the call, so a
      batched call selects what each image would alone (the official evaluation runs one image at a time).
    - LLaVA-NeXT: a crop chooses among the tokens unpadding leaves (the official code picks on the
      whole crop grid, then loses the picks unpadding drops), so the image keeps ``k``; a crop with
      fewer tokens than its share passes the rest on.
    - A per-call ``vision_feature_layer`` argument does not move the relevance layer, which is
      resolved at ``prune_`` from the model's config.

    Args:
        relevance_layer: where the CLIP relevance reads the vision tower: ``"feature"`` (default, the
            official code's: the model's feature layer) or ``"text_layer"`` (``PruneConfig.text_layer``,
            default ``-1``, the tower's final layer, which CLIP's ``post_layernorm`` and
            ``visual_projection`` were trained on: the ``text`` scorer's and ATP's layer, and this
            scorer's before it followed the official code; ``cdpruner:k=64,relevance_layer=text_layer``).
            With ``"feature"`` a ``text_layer`` other than ``-1`` is refused (it would do nothing).
        per_crop: select crop by crop where the adapter tells crops apart (default True, the
            official code's); False: the image's tokens are one set (visprune's earlier default;
            ``cdpruner:k=64,per_crop=false``).
        theta: the official code's commented-out relevance sharpening, off by default (None):
            ``r = exp(alpha * r)`` with ``alpha = theta / (2 * (1 - theta))`` (the paper's trade-off
            between relevance and diversity), ``theta`` in ``[0, 1)``.
    """

    def __init__(self, theta: float | None = None, relevance_layer: str = "feature", per_crop: bool = True) -> None:
        if relevance_layer not in RELEVANCE_LAYERS:
            raise ValueError(f"relevance_layer must be one of {', '.join(map(repr, RELEVANCE_LAYERS))}, "
                             f"got {relevance_layer!r}")
        if theta is not None and (isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 <= theta < 1):
            raise ValueError(f"theta must be None (the official default) or in [0, 1), got {theta!r}")
        super().__init__()
        self.theta = theta
        self.relevance_layer = relevance_layer
        if not isinstance(per_crop, bool):
            raise ValueError(f"per_crop must be True or False, got {per_crop!r}")
        self.per_crop = per_crop

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        super().setup(model, config, processor)
        if isinstance(self.relevance, ClipTextScorer):
            self.relevance.segments = True  # a long question: the official mean over 77-token segments
        self.patch_layer = None
        if self.relevance_layer != "feature" or not isinstance(self.relevance, ClipTextScorer):
            return
        if config.text_layer != -1:
            raise ValueError(f"text_layer={config.text_layer} does nothing with cdpruner's default relevance layer "
                             "(the model's feature layer, as the official code): leave it out, or pass "
                             "cdpruner:relevance_layer=text_layer (CDPrunerScorer(relevance_layer='text_layer'))")
        layer = feature_layer(model)
        self.patch_layer = -1 if layer is None else layer

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        cand = ctx.candidates
        raw = self.relevance(ctx).float()
        if isinstance(self.relevance, ClipTextScorer):
            raw = -raw
        lo = raw.masked_fill(~cand, math.inf).amin(-1, keepdim=True)
        hi = raw.masked_fill(~cand, -math.inf).amax(-1, keepdim=True)
        span = hi - lo
        r = torch.where(span > 0, (raw - lo + RELEVANCE_OFFSET) / span.clamp(min=1e-30), torch.ones_like(raw))
        if self.theta is not None:
            r = torch.exp(self.theta / (2 * (1 - self.theta)) * r)
        return torch.where(cand, r, torch.zeros_like(r))

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        f = torch.nn.functional.normalize(torch.nan_to_num(ctx.features.float(), nan=0.0), dim=-1)
        r = torch.where(ctx.candidates, scores.float(), torch.zeros_like(scores, dtype=torch.float))
        kernel = r[:, :, None] * (f @ f.transpose(1, 2)) * r[:, None, :]
        splits = [group_split(ctx, i) or (crop_split(ctx, i, int(k[i])) if self.per_crop else None)
                  for i in range(len(k))]
        if all(split is None for split in splits):
            return greedy_map(kernel, ctx.candidates, k)
        kept = []
        for i, split in enumerate(splits):
            parts = [(ctx.candidates[i], int(k[i]))] if split is None else split
            picks = [greedy_map(kernel[i : i + 1], mask[None], torch.tensor([share]))[0] for mask, share in parts]
            kept.append(torch.sort(torch.cat(picks)).values)
        return kept

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(theta={self.theta!r}, relevance_layer={self.relevance_layer!r}, "
                f"per_crop={self.per_crop!r})")
