"""The training-only auxiliary losses of stage 2 and the grounding phase: the grounding loss, which
teaches chosen attention heads where to look (GROUNDING, `grounding_targets`, `attribute_targets`,
`grounding_loss`), and the position heads, which make the image tokens keep their row and column
(`PositionHeads`). Neither is part of the saved model; the grounding loss shapes attention, and so
what attention-based pruners such as FastV see.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import scenes as S
from .configs import POSITION_SITES

# Grounding loss: which attention heads are taught where to look (documented because it shapes
# attention, and so what attention-based pruners such as FastV see). Each entry is
# (layer, head, kind); every target can be met by the information the token has at that layer:
#   "attr":   in layer 0, each attribute word of the question ("red", "circle", "small") looks up
#             the patches of every object with that attribute: its own embedding suffices.
#   "words":  in layer 0, the token that predicts the answer looks up the question's attribute
#             words (a text-to-text lookup), so that after layer 0 it knows what is asked about.
#   "answer": in layer --answer-layer (default 2; 1 before run S), the token that predicts the
#             answer looks up the patches of the objects the question is about (ground-truth
#             masks): a conjunction of the words it gathered. Not layer 1: FastV with K=2 ranks
#             the image tokens by layer 1's attention from that very token, which would then be a
#             map taught from the ground truth (pilot R1: FastV at 0.88 with any budget down to 16).
#             FastV with K=3 reads layer 2's map and is such an oracle on run S (README).
# Only the distribution *within* the target region (image or question) is supervised for
# "answer", so the share of attention left on the text (which a count can be read from) stays free.


def grounding_targets(answer_layer: int | None) -> tuple:
    """The (layer, head, kind) entries of the grounding loss; `answer_layer` None drops "answer"."""
    return ((0, 0, "attr"), (0, 1, "words")) + (((answer_layer, 0, "answer"),) if answer_layer is not None else ())


def run_targets(args) -> tuple:
    """The grounding targets a run's --answer-layer names (-1: no "answer" target)."""
    return grounding_targets(None if args.answer_layer < 0 else args.answer_layer)


def grounded_layers(targets) -> tuple:
    return tuple(sorted({layer for layer, _, _ in targets}))


ANSWER_LAYER = 2  # --answer-layer's default: past layer 1, whose attention FastV (K=2) ranks tokens by
GROUNDING = grounding_targets(ANSWER_LAYER)
GROUNDED_LAYERS = grounded_layers(GROUNDING)
_ATTR_WORDS = {**{c: ("colour", c) for c in S.COLOUR_NAMES}, **{s: ("shape", s) for s in S.SHAPES},
               **{p: ("shape", s) for s, p in S.PLURALS.items()}, **{z: ("size", z) for z in S.SIZES}}


def attribute_targets(question: str, objects, patches) -> list[tuple[int, np.ndarray]]:
    """(word index, patches of every object with that word's attribute) per attribute word."""
    out = []
    for i, w in enumerate(question.split()):
        if w not in _ATTR_WORDS:
            continue
        key, value = _ATTR_WORDS[w]
        mask = np.zeros(S.NUM_PATCHES, dtype=bool)
        for o, m in zip(objects, patches):
            if getattr(o, key) == value:
                mask |= m
        out.append((i, mask))
    return out


class PositionHeads(nn.Module):
    """Training-only linear heads that read each image token's row and column from the hidden
    states at POSITION_SITES; they are not part of the saved model.

    Why: linear probes on run M (the tower's features read the column of an object's patch at
    1.00, its projector's output at 0.57 and the language model after layer 2 at 0.08) showed
    that stage 2 learnt to throw position away before the language model could use it, so side
    questions stayed near chance. The heads make the projector and the first layers keep it."""

    def __init__(self, hidden: int, sites=POSITION_SITES):
        super().__init__()
        self.sites = tuple(sites)
        self.heads = nn.ModuleList(nn.Linear(hidden, 2 * S.GRID) for _ in self.sites)

    def forward(self, hidden_states, image_mask: torch.Tensor, patch_index: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of row and column over the image tokens (`image_mask` [B, T]) whose
        patch numbers are `patch_index` [B, K], in the order they appear."""
        index = patch_index.flatten()
        loss = torch.zeros(())
        for site, head in zip(self.sites, self.heads):
            logits = head(hidden_states[site][image_mask]).float()
            loss = loss + F.cross_entropy(logits[:, : S.GRID], index // S.GRID)
            loss = loss + F.cross_entropy(logits[:, S.GRID :], index % S.GRID)
        return loss / (2 * len(self.sites))


def grounding_loss(captured, seqs, img_start: int, mass_on_answer: bool = False, targets=GROUNDING):
    """Cross-entropy between each GROUNDING head's attention, renormalised over its target region
    (the image for "attr"/"answer", the tokens before it for "words"), and the uniform
    distribution on the targets; "attr" and "words" (and "answer" if mass_on_answer) also pay
    -log(attention mass on the targets). Returns (mean loss, {kind: loss})."""
    terms, parts = [], {}
    layers = grounded_layers(targets)
    for layer, head, kind in targets:
        att = captured[layers.index(layer)]  # [B, H, L, L]
        targets = [(b, p, t) for b, (_, _, g) in enumerate(seqs) for k, p, t in g if k == kind]
        if not targets:
            continue
        b_idx = torch.tensor([b for b, _, _ in targets])
        pos = torch.tensor([p for _, p, _ in targets])
        rows = att[b_idx, head, pos].float()  # [T, L]
        if kind == "words":
            tgt = torch.zeros_like(rows)
            for j, (_, _, where) in enumerate(targets):
                tgt[j, where] = 1.0
            region = torch.arange(rows.shape[-1]) >= img_start + S.NUM_PATCHES  # the text after the image
        else:
            tgt = torch.zeros_like(rows)
            tgt[:, img_start : img_start + S.NUM_PATCHES] = torch.from_numpy(
                np.stack([t for _, _, t in targets])).float()
            region = torch.zeros(rows.shape[-1], dtype=torch.bool)
            region[img_start : img_start + S.NUM_PATCHES] = True
        inside = rows * region
        dist = inside / inside.sum(-1, keepdim=True).clamp_min(1e-6)
        ce = -(torch.log(dist + 1e-6) * tgt).sum(-1) / tgt.sum(-1)
        loss = ce
        if kind != "answer" or mass_on_answer:
            loss = loss - torch.log((rows * tgt).sum(-1) + 1e-6)
        terms.append(loss.mean())
        parts[kind] = loss.mean().item()
    return (torch.stack(terms).mean() if terms else torch.zeros(())), parts
