"""The shapes proving ground: scenes with ground-truth masks and a small VLM trained on them.

    from visprune import shapes
    samples = shapes.make_samples(n=200, seed=12345)     # held-out (eval split) samples
    model, processor = shapes.load()                       # bundled LlavaForConditionalGeneration
    shapes.answer(model, processor, samples[0].image, samples[0].question)

Each sample has .image (PIL 224 x 224), .question, .answer (one word), .qtype, .caption,
.relevant_mask (bool [224, 224]) and .relevant_patches (bool [256], 16 x 16 row-major), .seed.
Training scenes come from split="train", a random stream no evaluation seed can reach.
"""

from .model import (
    CHECKPOINT,
    answer,
    build_processor,
    build_tokenizer,
    clip_path,
    load,
    load_clip,
    load_tower_only,
    normalise_answer,
    prompt,
)
from .scenes import (
    ANSWERS,
    BACKGROUNDS,
    CHANCE,
    COLOUR_NAMES,
    GRID,
    IMAGE_SIZE,
    NUM_PATCHES,
    PATCH,
    QTYPES,
    SHAPES,
    SIZES,
    SPLITS,
    Sample,
    Scene,
    SceneObject,
    make_question,
    make_sample,
    make_samples,
    random_scene,
    scene_rng,
)

__all__ = [
    "ANSWERS", "BACKGROUNDS", "CHANCE", "CHECKPOINT", "COLOUR_NAMES", "GRID", "IMAGE_SIZE",
    "NUM_PATCHES", "PATCH", "QTYPES", "SHAPES", "SIZES", "SPLITS", "Sample", "Scene",
    "SceneObject", "answer", "build_processor", "build_tokenizer", "clip_path", "load",
    "load_clip", "load_tower_only", "make_question", "make_sample", "make_samples", "normalise_answer", "prompt",
    "random_scene", "scene_rng",
]
