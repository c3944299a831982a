"""Training of the shapes proving ground's VLM: the code behind scripts/train_shapes.py.

    python scripts/train_shapes.py --help                # or: python -m visprune.shapes.training.cli

Modules, in the order a run uses them:

- configs: the stage-1 CLIP's and stage-2 LLaVA's configs, and the shared constants (seeds, ...)
- runtime: the log, the re-execution under jemalloc, the pace of the steps, the lr schedule
- data: pixels, patch masks, cached tower features (Pool), the question/answer turns of a scene
- sequences: token sequences of an image with its turns, batches, the subsets of image tokens
- grounding: the training-only grounding loss and position heads
- stage1: the CLIP with dense per-patch heads
- stage2: the LLaVA's projector and language model, stage 2 and the grounding phase
- cli: the arguments, the order of the stages, what a run writes (`main`)

How the bundled checkpoint was made with it: docs/shapes.md, "Training runs: how the bundled
checkpoint was made". The names below are re-exported for the probe scripts and the tests
(``from visprune.shapes import training as T``); `main` is imported from `.cli`.
"""

from .configs import (
    COUNT_TILT,
    FINAL_SEED,
    MONITOR_SEED,
    POSITION_SITES,
    clip_config,
    llava_config,
)
from .data import (
    MEAN,
    STD,
    Pool,
    count_answer,
    make_turns,
    object_patches,
    pixels,
    tower_features,
)
from .grounding import (
    ANSWER_LAYER,
    GROUNDED_LAYERS,
    GROUNDING,
    PositionHeads,
    attribute_targets,
    grounded_layers,
    grounding_loss,
    grounding_targets,
    run_targets,
)
from .runtime import (
    JEMALLOC,
    JEMALLOC_CONF,
    Pace,
    cosine,
    log,
    reexec_argv,
    use_jemalloc,
)
from .sequences import (
    Vocab,
    background_share,
    build_sequence,
    check_sequence,
    collate,
    patch_subset,
    subset_positions,
)
from .stage1 import (
    DenseHeads,
    clip_retrieval,
    dense_heads_loss,
    patch_accuracy,
    stage1_batch,
    train_stage1,
)
from .stage2 import fast_eval, finetune_args, lm_forward, new_llava, train_stage2

__all__ = [
    "ANSWER_LAYER", "COUNT_TILT", "FINAL_SEED", "GROUNDED_LAYERS", "GROUNDING", "JEMALLOC", "JEMALLOC_CONF",
    "MEAN", "MONITOR_SEED", "POSITION_SITES", "STD",
    "DenseHeads", "Pace", "Pool", "PositionHeads", "Vocab",
    "attribute_targets", "background_share", "build_sequence", "check_sequence", "clip_config", "clip_retrieval",
    "collate", "cosine", "count_answer", "dense_heads_loss", "fast_eval", "finetune_args", "grounded_layers",
    "grounding_loss", "grounding_targets", "llava_config", "lm_forward", "log", "make_turns", "new_llava",
    "object_patches", "patch_accuracy", "patch_subset", "pixels", "reexec_argv", "run_targets", "stage1_batch",
    "subset_positions", "tower_features", "train_stage1", "train_stage2", "use_jemalloc",
]
