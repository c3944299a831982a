"""The scorer interface and its registry."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from ... import ops
from ..context import ScoreContext
from ...registry import Registry


class Scorer:
    """Maps a :class:`ScoreContext` to importance scores ``[I, N]`` (higher = keep).

    Subclasses set ``needs`` (signal names from :mod:`visprune.scoring.context`) so the adapter captures
    only what is used, and may override :meth:`setup` to load weights or check the model once,
    when ``prune_`` is called, so that errors surface before the model is touched.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    #: the budget ``PruneConfig`` picks when none is given (and no ``k`` / ``energy`` / ``keep``); None: ``ratio``
    default_budget: ClassVar[str | None] = None
    #: :meth:`merge` returns the language model's tokens in its own order and count, not one per
    #: kept index (tower-space VisionZip, PruMerge); ``positions="original"`` is then refused
    own_order: bool = False
    #: its tower-space path also runs crop by crop on any-resolution models (``TowerStates.crops``)
    tower_crops: bool = False
    #: a constructor call of this scorer's post-projector variant, named where its tower-space path is refused
    projected_variant: ClassVar[str | None] = None
    #: the ``hidden_states`` index at which the adapter captures ``PATCH_HIDDEN`` for this scorer, set by
    #: :meth:`setup` for scorers that read a layer of their own (CDPruner's relevance, VisPruner's
    #: similarity: the model's feature layer); None: ``PruneConfig.text_layer``
    patch_layer: int | None = None

    def setup(self, model: Any, config: Any, processor: Any = None) -> None:
        """Called once by ``prune_``; raise ``ValueError`` / ``TypeError`` for an unusable set-up."""

    @property
    def relevance_source(self) -> str | None:
        """Which question relevance this scorer runs, once set up: ``"clip:<hub id or folder>"`` (CLIP
        text tower), ``"lmtext"`` (the language model's own embeddings), or None (no question term).
        ``visprune.last_selection(model).relevance`` reports it."""
        return None

    def __call__(self, ctx: ScoreContext) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def select(self, ctx: ScoreContext, scores: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        """Candidate indices each image keeps, ascending; ``k[i]`` of them. Default: top-``k`` scores.

        Selections that are not a top-``k`` of one score (diversity, pooling) override this.
        """
        masked = torch.where(ctx.candidates, scores.float(), torch.full_like(scores, float("-inf"), dtype=torch.float))
        return ops.keep_indices(masked, k)

    def merge(self, ctx: ScoreContext, kept: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """New features for the kept positions (same count), or None to keep them as they are.

        Merging methods (VisionZip's contextual tokens, pooling) fold dropped tokens into kept ones.
        """
        return None

    def options(self) -> dict[str, Any]:
        """The constructor settings of this instance that differ from their defaults, by name (each
        stored as the attribute of the same name): what ``PruneConfig.to_dict`` saves as
        ``scorer_options`` and what a method string such as ``pdrop:k=64,layers=8/16/24`` gives back."""
        out = {}
        for name, param in _parameters(type(self)).items():
            value = getattr(self, name, param.default)
            value = list(value) if isinstance(value, tuple) else value
            default = list(param.default) if isinstance(param.default, tuple) else param.default
            if value != default:
                out[name] = value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def feature_layer(model: Any) -> int | None:
    """The ``hidden_states`` index of the vision layer whose output the model projects for its language
    model: ``config.vision_feature_layer`` (transformers' name, the LLaVA family's; the deepest of a
    list), or None where the config names none (the tokens at the cut are then the tower's last
    outputs, as IDEFICS's and BLIP-2's ViT patches, or merged tokens, as Qwen2-VL's)."""
    layer = getattr(getattr(model, "config", None), "vision_feature_layer", None)
    if isinstance(layer, (list, tuple)):
        depth = model.config.vision_config.num_hidden_layers
        return max(layer, key=lambda i: i if i >= 0 else depth + 1 + i) if layer else None
    return layer if isinstance(layer, int) and not isinstance(layer, bool) else None


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def scorer_settings(name: str) -> list[str]:
    """The constructor settings of registered scorer ``name`` (``[]`` for scorers without any)."""
    return list(_parameters(SCORERS.get(name)))


def build_scorer(name: str, options: dict[str, Any]) -> Scorer:
    """Registered scorer ``name`` built with ``options`` (``ValueError`` naming its settings)."""
    unknown = sorted(set(options) - set(scorer_settings(name)))
    if unknown:
        valid = ", ".join(scorer_settings(name)) or "none"
        raise ValueError(f"scorer {name!r} has no setting {', '.join(unknown)}; its settings: {valid}")
    return SCORERS.get(name)(**options)


def registered_name(scorer: Scorer) -> str | None:
    """The name ``scorer``'s class is registered under, or None (an unregistered custom scorer)."""
    return scorer.name if scorer.name in SCORERS and SCORERS.get(scorer.name) is type(scorer) else None


SCORERS: Registry[Scorer] = Registry("scorer")
register_scorer = SCORERS.register
