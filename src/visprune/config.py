"""``PruneConfig``: every setting of a pruning run, validated on creation, serialisable."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from .scoring.budgets import BUDGETS, VIDEO_BUDGETS, Budget
from .scoring.scorers import SCORERS, Scorer
from .scoring.scorers.base import build_scorer, registered_name, scorer_settings
from .scoring.scorers.clip_text import AUTO

CONFIG_VERSION = 1
NORMS = ("minmax", "softmax", "rank", "none")
DEFAULT_KEEP = 0.5
DEFAULT_ENERGY = 0.95
CUTS = (None, "query", "vit")
POSITIONS = (None, "compact", "original")


# The fields each registered budget reads; given with another budget they would be silently ignored.
BUDGET_FIELDS = {"keep": ("ratio",), "k": ("fixed",), "energy": ("energy",), "max_keep": ("energy", "iqr"),
                 "video_budget": ("energy",)}


@dataclass(frozen=True)
class PruneConfig:
    """What to keep and how to score it. Frozen: ``replace`` makes a validated copy, and a model
    pruned with a config keeps exactly the settings it was checked with.

    Args:
        scorer: a registered scorer name (``visprune.list_scorers()``) or a ``Scorer`` instance.
        budget: a registered budget name (``visprune.list_budgets()``) or a ``Budget`` instance.
            ``None`` picks ``"fixed"`` when ``k`` is set, ``"energy"`` when ``energy`` is set,
            ``"ratio"`` when ``keep`` is set, else the scorer's own default (``"iqr"`` for
            ``prumerge`` / ``prumerge+``, the official outlier rule), else ``"ratio"``.
        keep: share of each image's visual tokens to keep, in ``(0, 1]`` (``ratio`` budget;
            default 0.5).
        k: number of visual tokens to keep per image, >= 1 (``fixed`` budget).
        energy: share of spectral energy to keep, in ``(0, 1]`` (``energy`` budget, E-AdaPrune;
            default 0.95).
        min_keep, max_keep: clamp of the ``energy`` and ``iqr`` budgets (``max_keep=None``: no upper clamp).

    A field that the chosen budget does not read (``keep`` with the energy budget, ``k`` with the
    ratio budget, ...) is refused rather than ignored, and so are booleans where numbers go.
        alpha: ATP fusion weight in ``[0, 1]``: ``alpha * norm(saliency) + (1 - alpha) * norm(text)``.
            ``None`` (default): chosen per model by measurement, the alpha ``visprune tune`` wrote into
            the model's folder (``visprune.json``) for the relevance that runs, else 0.75 (measured on
            the shapes proving ground, docs/defaults.md). Where that measurement found the question
            term does not help, ``prune_`` warns once (``QuestionTermWarning``) and names the better setting.
        norm: per-image normalisation of the ATP terms: ``minmax`` (default; measured best, see
            docs/defaults.md), ``softmax``, ``rank`` or ``none``.
        layer: vision layer whose attention gives the saliency, as an index into the tower's
            ``hidden_states`` (transformers' ``vision_feature_layer`` convention: ``-2`` is the
            penultimate layer's output, i.e. the attention inside that layer). ``None``: the layer
            whose output the model feeds to its language model.
        llm_layer: language-model layer ``K`` at which in-LLM scorers (``fastv``, ``dart``) prune: layers
            ``0 .. K-1`` see every token, the attention of the last prompt token in layer ``K-1``
            ranks the image tokens, and layers ``K ..`` see only the kept ones (FastV: ``K=2``; DART: the
            same ``K``, its pivots from layer ``K-1``). ``pdrop`` has stages instead (``PyramidDropScorer(layers=...)``).
        text_layer: vision layer (same convention) whose hidden states are projected into CLIP
            space for the ``text`` scorer and ATP's relevance; ``-1`` (default) is the final layer,
            which CLIP's ``post_layernorm`` and ``visual_projection`` were trained on. ``cdpruner``
            reads the model's feature layer instead, as its official code (and refuses another
            ``text_layer``), unless ``CDPrunerScorer(relevance_layer="text_layer")``.
        text_encoder: the CLIP text encoder of the ``text`` scorer and of ATP's relevance term.
            ``"auto"`` (default): the model's own CLIP partner when the folder it was loaded from
            ships one (``<folder>/clip/``, as the bundled shapes model and ``scripts/train_shapes.py``
            folders do), found by ``prune_`` from ``model.name_or_path``; otherwise none (a hub id or a
            model built in memory: nothing is downloaded). ``None``: no CLIP text encoder, explicitly.
            Or a ``CLIPModel``, a hub id or a local folder. Without a text encoder ATP uses the
            weight-free ``lmtext`` relevance and the ``text`` scorer is refused.
            ``visprune.last_selection(model).relevance`` says which ran (``"clip:<path>"`` or ``"lmtext"``).
        text_tokenizer: tokenizer of the text encoder; default: loaded from the same place.
        text_sign: +1 or -1, multiplies the CLIP patch-text similarity. Measured +1 on the shapes
            CLIP (docs/defaults.md); LLaVA's CLIP is reported to rank question-relevant patches
            lower (TRIM and CDPruner negate it): check on your model.
        cut: where pruning happens on architectures that offer a choice. BLIP-2 / InstructBLIP:
            ``"query"`` (default; the Q-Former's query outputs before the language model, which
            shortens the LM's input) or ``"vit"`` (ViT patches before the Q-Former, masked; the LM
            still sees every query, so this saves only Q-Former cross-attention). Other
            architectures have one cut and ignore it.
        seed: seed of the ``random`` scorer.
        positions: the language-model positions of what survives pre-LLM pruning. ``"compact"``
            (the LLaVA family's default): the kept tokens are numbered afresh, as if the prompt had
            been that short. ``"original"``: every kept token keeps the position it has in the
            unpruned prompt and decoding continues after the unpruned length, as FastV and
            Qwen2-VL's M-RoPE keep them; for models that learnt to read where image tokens sit
            (``scripts/probe_positions.py`` measures it). ``None``: the architecture's own way.
            ``"original"`` runs on the LLaVA family, Qwen2-VL and in-LLM scorers (FastV);
            ``"compact"`` on everything but Qwen2-VL and in-LLM scorers. ``generate`` continues the
            positions by itself; a decoding loop written by hand around ``forward`` must pass the
            following ``position_ids`` itself (the prompt's last kept position + 1, + 2, ...).
        temporal: the temporal stage of videos, before the scorer and the budget: ``None`` (default: off,
            each video pruned within its frames only) or a cosine-similarity threshold ``tau`` in ``(0, 1]``.
            A video token of temporal group ``t > 0`` (a frame pair on the Qwen-VL family) whose feature
            has cosine similarity ``>= tau`` to the token at the same place ``(h, w)`` in the last group
            where that place survived is dropped as a repeat (EVS / DyCoke-style; the first group always
            survives); the scorer and the budget then choose among the survivors only, so ``keep``,
            ``k`` and ``energy`` apply to the survivors (``keep=1.0`` keeps every non-repeat). A still
            clip keeps about one group's tokens, a busy one more. Runs on adapters that prune videos
            (refused at ``prune_`` elsewhere); image entries are left alone.
            ``visprune.last_selection(model).temporal_dropped`` says how many tokens it dropped per video.
        video_budget: how the ``energy`` budget treats a video's temporal groups (frame pairs on the
            Qwen-VL family): ``"clip-split"`` (default with the energy budget): the energy budget of the
            whole clip, divided among its groups in proportion to each group's own spectral energy (squared
            Frobenius norm of its candidate tokens; largest remainders), each group keeping its part of its
            own top tokens; ``"clip"``: one pool over the whole clip; ``"frame"``: each group's own energy
            budget. Read by the energy budget only (refused with another; ``ratio`` / ``fixed`` / ``iqr``
            pool the whole clip); images are unaffected. Scorers with their own selection (DivPrune,
            CDPruner, pooling, ...) get the clip's total and choose across it.
            ``visprune.last_selection(model).group_kept`` shows the split.
    """

    scorer: Any = "atp"
    budget: Any = None
    keep: float | None = None
    k: int | None = None
    energy: float | None = None
    min_keep: int = 1
    max_keep: int | None = None
    alpha: float | None = None
    norm: str = "minmax"
    layer: int | None = None
    llm_layer: int = 2
    text_layer: int = -1
    text_encoder: Any = AUTO
    text_tokenizer: Any = None
    text_sign: float = 1.0
    cut: str | None = None
    seed: int = 0
    positions: str | None = None
    temporal: float | None = None
    video_budget: str | None = None

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("scorer", _resolve(self.scorer, SCORERS, Scorer, "scorer"))
        budget = self.budget
        if budget is None:
            budget = ("fixed" if self.k is not None else "energy" if self.energy is not None
                      else "ratio" if self.keep is not None else _default_budget(self.scorer))
        set_("budget", _resolve(budget, BUDGETS, Budget, "budget"))
        if isinstance(self.budget, str):
            for name, readers in BUDGET_FIELDS.items():
                if getattr(self, name) is not None and self.budget not in readers:
                    raise ValueError(f"{name}={getattr(self, name)!r} does nothing with budget={self.budget!r} (it is "
                                     f"read by budget={' or '.join(map(repr, readers))}): leave it out or change the budget")
            if self.min_keep != 1 and self.budget not in ("energy", "iqr"):
                raise ValueError(f"min_keep={self.min_keep!r} does nothing with budget={self.budget!r} (it clamps the "
                                 "'energy' and 'iqr' budgets): leave it out or change the budget")
        for name in ("alpha", "seed", "min_keep", "max_keep", "text_sign"):
            if isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a number, not a boolean ({getattr(self, name)!r})")
        if self.keep is not None:
            _check_unit("keep", self.keep)
        if self.energy is not None:
            _check_unit("energy", self.energy)
        if self.temporal is not None:
            _check_unit("temporal", self.temporal, "the cosine similarity at or above which a video token "
                        "repeats the one before it; None: no temporal stage")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise ValueError(f"k must be an integer >= 1 (tokens kept per image), got {self.k!r}")
        if self.budget_name == "fixed" and self.k is None:
            raise ValueError("budget='fixed' needs k, the number of tokens to keep: PruneConfig(budget='fixed', k=64)")
        if self.budget_name == "ratio" and self.keep is None:
            set_("keep", DEFAULT_KEEP)
        if self.budget_name == "energy" and self.energy is None:
            set_("energy", DEFAULT_ENERGY)
        if self.video_budget is not None and self.video_budget not in VIDEO_BUDGETS:
            raise ValueError(f"unknown video_budget {self.video_budget!r}; valid: {', '.join(VIDEO_BUDGETS)} "
                             "(how the energy budget divides a video among its frame groups)")
        if self.budget_name == "energy" and self.video_budget is None:
            set_("video_budget", VIDEO_BUDGETS[0])
        if not isinstance(self.min_keep, int) or self.min_keep < 1:
            raise ValueError(f"min_keep must be an integer >= 1, got {self.min_keep!r}")
        if self.max_keep is not None:
            if not isinstance(self.max_keep, int) or self.max_keep < 1:
                raise ValueError(f"max_keep must be an integer >= 1 or None, got {self.max_keep!r}")
            if self.min_keep > self.max_keep:
                raise ValueError(f"min_keep ({self.min_keep}) must not exceed max_keep ({self.max_keep})")
        if self.alpha is not None and not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must be in [0, 1] (weight of the saliency term) or None (measured per model), "
                             f"got {self.alpha!r}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        for name in ("layer", "text_layer"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v == 0):
                raise ValueError(f"{name} must be a non-zero integer index into hidden_states (e.g. -2), got {v!r}")
        if isinstance(self.llm_layer, bool) or not isinstance(self.llm_layer, int) or self.llm_layer < 1:
            raise ValueError(f"llm_layer must be an integer >= 1 (FastV's K), got {self.llm_layer!r}")
        if self.text_sign not in (1, -1, 1.0, -1.0):
            raise ValueError(f"text_sign must be +1 or -1, got {self.text_sign!r}")
        if self.cut not in CUTS:
            raise ValueError(f"unknown cut {self.cut!r}; valid: {', '.join(str(c) for c in CUTS)}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; valid: {', '.join(str(p) for p in POSITIONS)}")
        _check_text_encoder(self.text_encoder)
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    @property
    def scorer_name(self) -> str:
        return self.scorer if isinstance(self.scorer, str) else self.scorer.name

    @property
    def budget_name(self) -> str:
        return self.budget if isinstance(self.budget, str) else self.budget.name

    def replace(self, **changes: Any) -> "PruneConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict; instances are stored by name."""
        out: dict[str, Any] = {"version": CONFIG_VERSION}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "scorer":
                v = self.scorer_name
            elif f.name == "budget":
                v = self.budget_name
            elif f.name in ("text_encoder", "text_tokenizer") and v is not None and not isinstance(v, str):
                v = str(getattr(v, "name_or_path", None) or type(v).__name__)
            out[f.name] = v
        if not isinstance(self.scorer, str) and registered_name(self.scorer) and self.scorer.options():
            out["scorer_options"] = self.scorer.options()  # a registered scorer built with its own settings
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PruneConfig":
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(f"PruneConfig dict has version {version}; this visprune reads version {CONFIG_VERSION}")
        options = dict(data.pop("scorer_options", None) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        scorer = data.get("scorer", cls.scorer)
        settings = scorer_settings(scorer) if isinstance(scorer, str) and scorer in SCORERS else []
        options.update({name: data.pop(name) for name in unknown if name in settings})  # the scorer's own settings
        unknown = [name for name in unknown if name not in settings]
        if unknown:
            also = f"; settings of scorer {scorer!r}: {', '.join(settings)}" if settings else ""
            raise ValueError(f"unknown PruneConfig fields {unknown}; valid: {', '.join(sorted(known))}{also}")
        if options:
            if not isinstance(scorer, str):
                raise ValueError("scorer_options need the scorer by name, not an instance")
            data["scorer"] = build_scorer(scorer, options)
        return cls(**data)


def _check_text_encoder(value: Any) -> None:
    valid = (f"{AUTO!r} (the model's own CLIP partner when its folder ships one), None (no CLIP: ATP uses "
             "the weight-free lmtext relevance), a hub id, a local folder or a CLIPModel")
    if value is None or isinstance(value, torch.nn.Module):
        return
    if not isinstance(value, str):
        raise ValueError(f"text_encoder must be {valid}; got {type(value).__name__} {value!r}")
    if value.strip().lower() in ("", "none", "null", "lmtext"):
        raise ValueError(f"text_encoder={value!r} names no CLIP; for the weight-free lmtext relevance pass "
                         f"text_encoder=None. Valid: {valid}")
    if value != AUTO and value.strip().lower() == AUTO:
        raise ValueError(f"text_encoder={value!r}: write {AUTO!r} (lower case) for the model's own CLIP partner")


def _check_unit(name: str, value: Any, what: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1]{f' ({what})' if what else ''}, got {value!r}")


def _default_budget(scorer: Any) -> str:
    """The scorer's own default budget (PruMerge: its ``iqr`` outlier rule), else ``"ratio"``."""
    cls = SCORERS.get(scorer) if isinstance(scorer, str) else type(scorer)
    return getattr(cls, "default_budget", None) or "ratio"


def _resolve(value: Any, registry, base: type, kind: str):
    if isinstance(value, str):
        registry.get(value)  # raises ValueError listing the valid names
        return value
    if isinstance(value, base):
        return value
    raise TypeError(f"{kind} must be a registered name ({', '.join(registry.names())}) or a {base.__name__}, got {value!r}")
