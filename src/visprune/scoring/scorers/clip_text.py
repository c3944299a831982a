"""``text``: question relevance in CLIP space (TRIM-style)."""

from __future__ import annotations

from typing import Any

import torch

from ... import ops
from ..measured import measured_relevance, model_folder
from ..context import PATCH_HIDDEN, QUESTION_TEXT, ScoreContext
from .base import Scorer, register_scorer
from .lm_text import LmTextScorer

#: ``PruneConfig.text_encoder`` default: the model's own CLIP partner when its folder ships one, else none
AUTO = "auto"
#: where a model folder ships its CLIP partner (text tower and projections): ``<folder>/clip/``, as the
#: bundled shapes checkpoint and every folder ``scripts/train_shapes.py`` writes do
PARTNER_FOLDER = "clip"


def clip_partner(model: Any) -> str | None:
    """The CLIP partner the model's own folder ships, or None: ``<folder>/clip`` (with a ``config.json``),
    where ``<folder>`` is the local folder ``from_pretrained`` loaded the model from (``model.name_or_path``).

    The one lookup behind ``text_encoder="auto"`` (``prune_``) and the command line's model loader.
    A hub id, or a model built in memory, has no folder here, so no partner (nothing is downloaded).
    """
    folder = model_folder(model)
    if folder is not None and (folder / PARTNER_FOLDER / "config.json").is_file():
        return str(folder / PARTNER_FOLDER)
    return None


def text_encoder_for(model: Any, config: Any) -> Any:
    """``config.text_encoder`` with ``"auto"`` resolved against ``model``: a hub id, a folder, a
    ``CLIPModel``, or None (no CLIP text encoder: ATP falls back to ``lmtext``)."""
    enc = config.text_encoder
    return clip_partner(model) if isinstance(enc, str) and enc == AUTO else enc


@register_scorer("text")
class ClipTextScorer(Scorer):
    """Cosine similarity of each visual token to the question, in CLIP's joint space.

    Token ``i``'s vision hidden state at ``PruneConfig.text_layer`` goes through CLIP's
    ``post_layernorm`` and ``visual_projection`` (the path CLIP applies to its [CLS] token, so it
    reproduces ``get_image_features`` on [CLS]); the question goes through CLIP's text tower and
    ``text_projection``. The score is the cosine times ``PruneConfig.text_sign``.

    The text encoder (``PruneConfig.text_encoder``; default ``"auto"``: the CLIP partner the model's
    folder ships, :func:`clip_partner`) must share the VLM's vision tower space: for LLaVA-1.5 that
    is ``openai/clip-vit-large-patch14-336``. Only its text tower and the two projection heads are
    kept in memory. Cf. TRIM (Song et al., arXiv 2409.10994).
    """

    needs = frozenset({PATCH_HIDDEN, QUESTION_TEXT})
    source: str | None = None  # what ran: "clip:<hub id or folder>", set by setup
    #: how a question longer than the text tower's positions is embedded: False (default; the ``text``
    #: scorer's and ATP's), truncated to them; True (CDPruner's, :meth:`segment_embeddings`), split
    #: into segments whose similarities are averaged
    segments: bool = False

    @property
    def relevance_source(self) -> str | None:  # type: ignore[override]
        return self.source

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        from transformers import AutoTokenizer, CLIPModel

        enc = text_encoder_for(model, config)
        if enc is None:
            where = (" and this model's folder ships none (text_encoder='auto' looks for "
                     f"<model folder>/{PARTNER_FOLDER}/config.json)" if config.text_encoder == AUTO else "")
            raise ValueError(
                f"scorer 'text' needs a CLIP text encoder{where}: PruneConfig(text_encoder=<hub id, local folder or "
                "CLIPModel>); or use scorer='lmtext', which needs no extra weights"
            )
        if isinstance(enc, str):
            clip = CLIPModel.from_pretrained(enc)
        elif isinstance(enc, CLIPModel):
            clip = enc
        else:
            raise TypeError(f"text_encoder must be a hub id, a local folder or a CLIPModel, got {type(enc).__name__}")
        tok = config.text_tokenizer
        if tok is None:
            source = enc if isinstance(enc, str) else getattr(clip, "name_or_path", None)
            if not source:
                raise ValueError("pass PruneConfig(text_tokenizer=...) with a CLIPModel instance that has no name_or_path")
            tok = AutoTokenizer.from_pretrained(source)
        vis_cfg = getattr(model.config, "vision_config", None)
        want = getattr(vis_cfg, "hidden_size", None)
        have = clip.config.vision_config.hidden_size
        if want is not None and want != have:
            raise ValueError(
                f"text_encoder's vision width ({have}) differs from the model's vision tower ({want}): "
                "use the CLIP the VLM's tower was taken from"
            )
        param = next(model.parameters())
        self.source = f"clip:{enc if isinstance(enc, str) else getattr(clip, 'name_or_path', None) or 'CLIPModel'}"
        self.tokenizer = tok
        self.max_length = clip.config.text_config.max_position_embeddings
        self.text_model = clip.text_model.to(param.device).eval()
        self.text_projection = clip.text_projection.to(param.device).eval()
        self.post_layernorm = clip.vision_model.post_layernorm.to(param.device).eval()
        self.visual_projection = clip.visual_projection.to(param.device).eval()

    def text_embeddings(self, questions: list[str]) -> torch.Tensor:
        device = self.text_projection.weight.device
        tok = self.tokenizer(questions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tok = {k: ops.to_device(v, device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        pooled = self.text_model(**tok).pooler_output
        return torch.nn.functional.normalize(self.text_projection(pooled).float(), dim=-1)

    def segment_embeddings(self, question: str) -> torch.Tensor:
        """``[M, D]`` unit embeddings of one question's segments, as CDPruner's official
        ``CLIPVisionTower.forward`` (``clip_encoder.py``) makes them: the question tokenised once, not
        truncated (one BOS at its start, one EOS at its end), zero ids with a zero attention mask
        appended up to a multiple of the tower's ``max_position_embeddings`` (77), then cut into
        rows of that length, each embedded on its own (positions from 0; pooled where the text
        model pools, e.g. the row's largest id, the EOS, in CLIP's legacy configs). No overlap;
        the middle segments carry neither BOS nor EOS. A question within 77 tokens is one segment,
        the truncated embedding's."""
        device = self.text_projection.weight.device
        tok = self.tokenizer(question, return_tensors="pt")
        n = tok["input_ids"].shape[1]
        pad = -n % self.max_length
        rows = {key: torch.cat([tok[key], tok[key].new_zeros(1, pad)], dim=1).reshape(-1, self.max_length)
                for key in ("input_ids", "attention_mask")}
        pooled = self.text_model(**{key: ops.to_device(v, device) for key, v in rows.items()}).pooler_output
        return torch.nn.functional.normalize(self.text_projection(pooled).float(), dim=-1)

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:
        if not hasattr(self, "text_model"):
            raise RuntimeError("scorer 'text' was not set up: use it through visprune.prune_")
        hidden = ctx.require(PATCH_HIDDEN, "scorer 'text'")
        questions = ctx.require(QUESTION_TEXT, "scorer 'text'")
        hidden = torch.nan_to_num(hidden, nan=0.0).to(self.visual_projection.weight)
        patches = self.visual_projection(self.post_layernorm(hidden)).float()
        patches = torch.nn.functional.normalize(patches, dim=-1)
        if self.segments:  # the mean over segments of the similarity (CDPruner's official order)
            per_question = {q: self.segment_embeddings(q).to(patches.device) for q in dict.fromkeys(questions)}
            sim = torch.stack([(p @ per_question[q].T).mean(-1) for p, q in zip(patches, questions)])
        else:
            text = self.text_embeddings(questions).to(patches.device)
            sim = torch.einsum("ind,id->in", patches, text)
        return sim * float(ctx.config.text_sign)


def question_relevance(model: Any, config: Any, processor: Any = None) -> Scorer:
    """The question-relevance term of the text-aware scorers (ATP, CDPruner), set up: CLIP similarity
    (:class:`ClipTextScorer`) when there is a CLIP text encoder (``text_encoder_for``), else the
    weight-free language-model embedding similarity (``lmtext``); and ``lmtext`` where the model's
    folder says ``visprune tune`` measured it better than the model's own CLIP partner
    (:func:`~visprune.scoring.measured.measured_relevance`). Its ``relevance_source`` says which."""
    enc = text_encoder_for(model, config)
    own = config.text_encoder == AUTO or enc == clip_partner(model)
    if enc is not None and own and measured_relevance(model) == "lmtext":
        enc = None  # the model's own CLIP measured worse than lmtext (visprune tune); another CLIP named is kept
    relevance = ClipTextScorer() if enc is not None else LmTextScorer()
    relevance.setup(model, config, processor)
    return relevance


class QuestionTermScorer(Scorer):
    """Base of scorers with a question-relevance term (ATP, CDPruner): ``self.relevance`` is set up by
    :func:`question_relevance` at ``prune_``, and ``relevance_source`` reports which ran."""

    def __init__(self) -> None:
        self.relevance: Scorer = LmTextScorer()

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return self.relevance.needs

    @property
    def relevance_source(self) -> str | None:  # type: ignore[override]
        return self.relevance.relevance_source

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        self.relevance = question_relevance(model, config, processor)
