"""Registered scorers: ``(ScoreContext) -> scores [I, N]``."""

from .base import SCORERS, Scorer, register_scorer
from .attention import ClsAttentionScorer
from .clip_text import ClipTextScorer
from .lm_text import LmTextScorer
from .random import RandomScorer
from .atp import AtpScorer
from .pool import PoolScorer
from .visionzip import VisionZipScorer
from .prumerge import PruMergePlusScorer, PruMergeScorer
from .divprune import DivPruneScorer
from .fastv import FastVScorer
from .dart import DartScorer
from .pdrop import PyramidDropScorer
from .cdpruner import CDPrunerScorer
from .vispruner import VisPrunerScorer
from .context_tokens import WithContextTokens

__all__ = [
    "SCORERS",
    "Scorer",
    "register_scorer",
    "ClsAttentionScorer",
    "ClipTextScorer",
    "LmTextScorer",
    "RandomScorer",
    "AtpScorer",
    "PoolScorer",
    "VisionZipScorer",
    "PruMergeScorer",
    "PruMergePlusScorer",
    "DivPruneScorer",
    "FastVScorer",
    "DartScorer",
    "PyramidDropScorer",
    "CDPrunerScorer",
    "VisPrunerScorer",
    "WithContextTokens",
]
