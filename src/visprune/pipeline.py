"""One pruning decision: encode images, score, budget, select. Used by every adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .measure import clock
from . import ops
from .adapters import Adapter, Encoded
from .batching import PromptLayout
from .scoring.context import QUESTION_EMBEDS, QUESTION_TEXT, ScoreContext
from .scoring.decide import decide
from .prompt import extract_question


@dataclass
class Selection:
    """The outcome of one call: per-image features and kept indices, and what it cost."""

    encoded: Encoded
    kept: list[torch.Tensor]
    image_rows: list[int]
    score_seconds: float  # temporal stage + scorer + budget + selection (+ merging)
    encode_seconds: float = 0.0  # the adapter's encode, the model's own vision work included
    apply_seconds: float = 0.0  # turning the selection into the call's inputs
    scores: torch.Tensor | None = None  # [I, N] as the scorer returned them (padded rows)
    questions: list[str] | None = None  # per image, when a text-aware scorer read them
    # the question relevance that ran: "clip:<hub id or folder>", "lmtext", or None (no question term)
    relevance: str | None = None

    # features a merging scorer put at the kept positions; with ``own_order`` the features the
    # language model receives, in the scorer's order and count (VisionZip's [CLS] first and
    # contextual tokens last, PruMerge's extra token): the image then keeps its first
    # ``len(merged[i])`` placeholders (compact positions only; prune_ refuses "original")
    merged: list[torch.Tensor] | None = None
    own_order: bool = False
    layout: PromptLayout | None = None  # the call's prompt on the host (image rows, row widths)
    original_positions: bool = False  # PruneConfig.positions == "original": kept tokens keep their positions
    repeats: torch.Tensor | None = None  # [I, N] tokens the temporal stage dropped (PruneConfig.temporal)

    @property
    def overhead_seconds(self) -> float:
        """visprune's own work: reading the prompt layout, signal capture and alignment, scoring,
        selection, input rebuild."""
        layout = self.layout.read_seconds if self.layout is not None else 0.0
        return layout + self.encode_seconds - self.encoded.model_seconds + self.score_seconds + self.apply_seconds

    @property
    def kept_features(self) -> list[torch.Tensor]:
        if self.merged is not None:
            return self.merged
        return [f[idx] for f, idx in zip(self.encoded.features, self.kept)]

    @property
    def sent(self) -> list[int]:
        """Visual tokens the language model receives, per image."""
        if self.own_order:
            return [len(f) for f in self.merged]
        return [len(k) for k in self.kept]

    @property
    def modalities(self) -> list[str]:
        """The kind of each entry: ``"image"`` or ``"video"`` (images first, then videos)."""
        return self.encoded.modalities or ["image"] * len(self.kept)

    @property
    def temporal_dropped(self) -> list[int] | None:
        """Per video (in video order), how many tokens the temporal stage dropped as repeats of the frame
        group before; None when the stage is off (``PruneConfig.temporal=None``)."""
        if self.repeats is None:
            return None
        counts = self.repeats.sum(-1).tolist()
        return [int(counts[i]) for i, kind in enumerate(self.modalities) if kind == "video"]

    @property
    def group_kept(self) -> list[list[int]]:
        """Per video (in video order), the tokens kept in each temporal group (frame pair on the
        Qwen-VL family), first group first; empty where the adapter gives no token grid."""
        out = []
        thw = self.encoded.thw or [None] * len(self.kept)
        for kind, idx, grid in zip(self.modalities, self.kept, thw):
            if kind == "video" and grid is not None and not self.own_order:
                t, h, w = grid
                idx = idx.cpu()
                out.append(torch.bincount(idx[idx < t * h * w] // (h * w), minlength=t).tolist())
        return out

    def kept_features_by_kind(self) -> dict[str, list[torch.Tensor]]:
        """:attr:`kept_features` split by kind, in entry order (``mm_encoder_outputs``' keys)."""
        out: dict[str, list[torch.Tensor]] = {}
        for kind, f in zip(self.modalities, self.kept_features):
            out.setdefault(kind, []).append(f)
        return out

    def token_keep(self, kind: str) -> torch.Tensor:
        """One bool per placeholder of one kind, in the model's scatter order for that kind."""
        return self.image_token_keep([i for i, k in enumerate(self.modalities) if k == kind])

    def image_token_keep(self, entries: list[int] | None = None) -> torch.Tensor:
        """One bool per image placeholder, in the model's scatter order (``entries``: only those)."""
        masks = []
        for i, (f, idx) in enumerate(zip(self.encoded.features, self.kept)):
            if entries is not None and i not in entries:
                continue
            m = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
            if self.own_order:
                m[: len(self.merged[i])] = True
            else:
                m[idx] = True
            masks.append(m)
        if not masks:
            return torch.zeros(0, dtype=torch.bool)
        return torch.cat(masks)


def image_rows(placeholders: list[int], lengths: list[int], kind: str = "image") -> list[int]:
    """The batch row of each image, from the placeholder count of each row (features fill
    placeholders in row-major order)."""
    total = sum(lengths)
    if sum(placeholders) != total:
        raise ValueError(
            f"the prompt has {sum(placeholders)} {kind} placeholder tokens but the {kind}s give {total} features; "
            f"build inputs with the model's processor (one placeholder run per {kind})"
        )
    rows, row, filled = [], 0, 0
    for n in lengths:  # the image starting at placeholder number `filled` sits in the row holding it
        while filled >= placeholders[row]:
            filled -= placeholders[row]
            row += 1
        rows.append(row)
        filled += n
    return rows


def entry_rows(adapter: Adapter, model: Any, enc: Encoded, layout: PromptLayout, lengths: list[int]) -> list[int]:
    """The batch row of each entry; with several kinds (images and videos), each kind from its own
    placeholders, since the model fills each kind's placeholders on its own."""
    if enc.modalities is None:
        return image_rows(layout.placeholders, lengths)
    rows = [0] * len(lengths)
    for kind, token_id in adapter.visual_tokens(model).items():
        entries = [i for i, k in enumerate(enc.modalities) if k == kind]
        for i, row in zip(entries, image_rows(layout.placeholders_of(token_id), [lengths[i] for i in entries], kind)):
            rows[i] = row
    return rows


def questions_for(model: Any, adapter: Adapter, processor: Any, layout: PromptLayout, override) -> list[str]:
    """The question of each batch row: the override, or the prompt decoded and cleaned."""
    b = len(layout.ids)
    if override is not None:
        qs = [override] * b if isinstance(override, str) else list(override)
        if len(qs) != b:
            raise ValueError(f"visprune_question has {len(qs)} entries for a batch of {b}")
        return qs
    tok = getattr(processor, "tokenizer", processor)
    if tok is None or not hasattr(tok, "decode"):
        raise ValueError(
            "a text-aware scorer needs the question: pass processor= to prune_ so visprune can read it from the "
            "prompt, or pass visprune_question='...' (or a list, one per sample) to generate/forward"
        )
    visual = layout.placeholder_ids
    out = []
    for row, mask in zip(layout.ids, layout.mask):
        ids = [t for t, m in zip(row, mask) if m and t not in visual]
        text = tok.decode(ids, skip_special_tokens=True)
        out.append(extract_question(text, adapter.user_markers, adapter.assistant_markers))
    return out


def question_embeddings(model: Any, processor: Any, questions: list[str] | None, layout: PromptLayout, device):
    """Language-model input embeddings of each row's question tokens (one copy to the device for
    the whole batch)."""
    emb = model.get_input_embeddings()
    tok = getattr(processor, "tokenizer", processor)
    per_row = []
    for i, (row, mask) in enumerate(zip(layout.ids, layout.mask)):
        if questions is not None and tok is not None and hasattr(tok, "__call__"):
            per_row.append(tok(questions[i], add_special_tokens=False)["input_ids"])
        else:  # no tokenizer: every text token of the prompt
            per_row.append([t for t, m in zip(row, mask) if m and t not in layout.placeholder_ids])
    ids = ops.to_device(torch.tensor([t for row in per_row for t in row], dtype=torch.long), device)
    return list(emb(ids).detach().split([len(row) for row in per_row]))


def build_context(
    state: Any, model: Any, input_ids, attention_mask, image_inputs: dict, question_override, layout: PromptLayout
) -> tuple[Encoded, ScoreContext, list[int], float]:
    """Encode the images of one call and gather what the scorer and budget need."""
    cfg, adapter, scorer = state.config, state.adapter, state.scorer
    t0 = clock.now()
    enc = adapter.per_image(model, adapter.encode(model, image_inputs, scorer.needs, cfg), layout)
    encode_seconds = clock.now() - t0
    lengths = [f.shape[0] for f in enc.features]
    rows = enc.image_rows if enc.image_rows is not None else entry_rows(adapter, model, enc, layout, lengths)
    with torch.no_grad():
        feats, valid = ops.pad_ragged([f.detach() for f in enc.features])
        protected, _ = ops.pad_ragged(enc.protected, value=False)
        ctx = ScoreContext(features=feats, valid=valid, protected=protected & valid, config=cfg)
        if enc.saliency is not None:
            ctx.saliency = ops.pad_ragged(enc.saliency)[0]
        if enc.patch_hidden is not None:
            ctx.patch_hidden = ops.pad_ragged(enc.patch_hidden)[0]
        ctx.image_keys = enc.image_keys
        if enc.keys is not None:
            ctx.keys = ops.pad_ragged(enc.keys)[0]
        ctx.grids = enc.grids
        if enc.crops is not None:
            ctx.crops = ops.pad_ragged(enc.crops, value=-1)[0]
        ctx.tower = enc.tower
        ctx.groups = temporal_groups(enc, valid)
        if ctx.groups is not None:
            kinds = enc.modalities or ["image"] * len(enc.features)
            ctx.thw = [thw if kind == "video" else None for kind, thw in zip(kinds, enc.thw)]
        needs = scorer.needs
        if QUESTION_TEXT in needs or QUESTION_EMBEDS in needs:
            qs = None
            if QUESTION_TEXT in needs or state.processor is not None or question_override is not None:
                qs = questions_for(model, adapter, state.processor, layout, question_override)
                ctx.questions = [qs[r] for r in rows]
            if QUESTION_EMBEDS in needs:
                per_row = question_embeddings(model, state.processor, qs, layout, input_ids.device)
                ctx.question_embeds = [per_row[r] for r in rows]
    return enc, ctx, rows, encode_seconds


def temporal_groups(enc: Encoded, valid: torch.Tensor) -> torch.Tensor | None:
    """``[I, N]`` the temporal group of each video token (``Encoded.thw``), -1 elsewhere; None without videos."""
    if enc.thw is None:
        return None
    kinds = enc.modalities or ["image"] * len(enc.features)
    groups = torch.full(valid.shape, -1, dtype=torch.int64, device=valid.device)
    found = False
    for i, (kind, thw) in enumerate(zip(kinds, enc.thw)):
        if kind == "video" and thw is not None:
            t, h, w = thw
            groups[i, : t * h * w] = torch.arange(t, device=valid.device).repeat_interleave(h * w)
            found = True
    return groups if found else None


def temporal_repeats(enc: Encoded, tau: float, valid: torch.Tensor) -> torch.Tensor | None:
    """``[I, N]`` the video tokens the temporal stage drops (:func:`visprune.ops.temporal_repeats` per
    video entry, ``Encoded.thw``); image entries and adapters without a token grid lose none."""
    if enc.thw is None:
        return None
    kinds = enc.modalities or ["image"] * len(enc.features)
    repeats = torch.zeros_like(valid)
    for i, (kind, f, thw) in enumerate(zip(kinds, enc.features, enc.thw)):
        if kind == "video" and thw is not None:
            n = thw[0] * thw[1] * thw[2]  # tokens after the grid (LLaVA-OneVision's newline) are never repeats
            repeats[i, :n] = ops.temporal_repeats(f[:n], thw, tau).to(repeats.device)
    return repeats


def select(
    state: Any, model: Any, input_ids, attention_mask, image_inputs: dict, question_override, layout: PromptLayout
) -> Selection:
    """Encode the images of one call and choose the tokens each keeps."""
    enc, ctx, rows, encode_seconds = build_context(
        state, model, input_ids, attention_mask, image_inputs, question_override, layout
    )
    start = clock.now()
    with torch.no_grad():
        if state.config.temporal is not None:  # timed with the scorer: visprune's own work
            ctx.repeats = temporal_repeats(enc, state.config.temporal, ctx.valid)
        scores = state.scorer(ctx)
        kept, merged = decide(state.scorer, state.budget, ctx, scores)
    return Selection(
        encoded=enc,
        kept=kept,
        image_rows=rows,
        score_seconds=clock.now() - start,
        encode_seconds=encode_seconds,
        scores=scores.detach(),
        questions=ctx.questions,
        relevance=state.scorer.relevance_source,
        merged=merged,
        own_order=merged is not None and getattr(state.scorer, "own_order", False),
        layout=layout,
        original_positions=state.config.positions == "original",
        repeats=ctx.repeats,
    )
