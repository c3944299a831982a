"""visprune: adaptive visual-token pruning for Hugging Face vision-language models.

    from visprune import prune_, unprune_, PruneConfig
    prune_(model, PruneConfig(scorer="atp", keep=0.4), processor=processor)
    out = model.generate(**inputs)
    visprune.last_kept(model)
    unprune_(model)
"""

from . import ops
from .scoring.budgets import BUDGETS, Budget, register_budget
from .config import PruneConfig
from .scoring.scorers import SCORERS, Scorer, register_scorer
from .scoring.scorers.atp import QuestionTermWarning
from .transform import is_pruned, last_kept, last_selection, prune_, unprune_

__version__ = "0.1.0"


def list_scorers() -> list[str]:
    """Names of the registered scorers."""
    return SCORERS.names()


def list_budgets() -> list[str]:
    """Names of the registered budgets."""
    return BUDGETS.names()


__all__ = [
    "PruneConfig",
    "prune_",
    "unprune_",
    "last_kept",
    "last_selection",
    "is_pruned",
    "list_scorers",
    "list_budgets",
    "register_scorer",
    "register_budget",
    "Scorer",
    "Budget",
    "QuestionTermWarning",
    "ops",
]
