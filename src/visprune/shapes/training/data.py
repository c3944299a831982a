"""Training scenes and what the models are fed from them.

`pixels` normalises images as CLIPImageProcessor does; `object_patches` gives each object's patch
mask; `tower_features` runs the frozen vision tower (its penultimate layer, what LLaVA's projector
receives); `Pool` holds stage 2's training scenes with their cached tower features; `make_turns`
draws the question/answer turns of a scene (with `count_answer` for --balanced-counts).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import torch

from .. import model as M
from .. import scenes as S
from .configs import COUNT_TILT
from .grounding import attribute_targets
from .runtime import log

MEAN = np.asarray([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.asarray([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def pixels(images: list[np.ndarray]) -> torch.Tensor:
    """What CLIPImageProcessor gives for a 224 x 224 image (checked in tests), without PIL."""
    x = (np.stack(images).astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def object_patches(scene: S.Scene) -> list[np.ndarray]:
    return [
        S.Scene.patch_mask(scene.pixel_mask([k])) for k in range(len(scene.objects))
    ]


@torch.no_grad()
def tower_features(tower, images) -> torch.Tensor:
    """Penultimate-layer patch features without [CLS]: what LLaVA's projector receives."""
    out = tower(pixel_values=pixels(images), output_hidden_states=True)
    return out.hidden_states[-2][:, 1:].to(torch.bfloat16)


class Pool:
    """Training scenes of stage 2: objects, per-object patch masks and cached tower features."""

    def __init__(self, n: int, seed: int, tower, batch: int = 64, fh=None):
        self.objects, self.patches, feats = [], [], []
        t0 = time.time()
        tower.eval()
        for b in range(0, n, batch):
            scenes = [S.random_scene(S.scene_rng(seed, i, "train")) for i in range(b, min(n, b + batch))]
            self.objects += [s.objects for s in scenes]
            self.patches += [object_patches(s) for s in scenes]
            feats.append(tower_features(tower, [s.image for s in scenes]))
            if b % (batch * 50) == 0:
                log(f"caching tower features {b}/{n} {time.time() - t0:.0f}s", fh)
        self.features = torch.cat(feats)
        self.n_objects = np.asarray([len(o) for o in self.objects])


def count_answer(objects, rng: np.random.Generator) -> int:
    """The answer of a count question for this scene: one of the counts (1..4) that some shape or
    colour of the scene has, larger ones favoured (weight count**COUNT_TILT) because a scene
    allows 1 far more often than 4. Drawing 1..4 blindly, as the held-out samples do (they
    redraw the *scene* until it fits), would mostly fail on a fixed training scene and leave
    count questions rare and mostly "1" (13% of the questions, 37% "1" and 10% "4" on scenes of
    up to 12 objects) against a uniform 1..4 in every evaluation."""
    counts = {sum(getattr(o, attr) == getattr(p, attr) for o in objects)
              for p in objects for attr in ("shape", "colour")}
    options = np.asarray(sorted(c for c in counts if 1 <= c <= S.MAX_PER_ATTRIBUTE))
    weights = options.astype(float) ** COUNT_TILT
    return int(rng.choice(options, p=weights / weights.sum()))


def make_turns(objects, patches, rng: np.random.Generator, n_q: int, caption_p: float, types=S.QTYPES,
               balanced_counts: bool = False):
    scene = SimpleNamespace(objects=objects)
    turns = []
    if rng.random() < caption_p:
        cap = S.Scene(objects=objects, background="plain",
                      image=np.zeros((1, 1, 3), np.uint8), object_pixels=np.zeros((1, 1), np.int16))
        turns.append((M.CAPTION_QUESTION, cap.caption(), None, None))
    tries = 0
    while len(turns) < n_q and tries < 4 * n_q:
        tries += 1
        qtype = types[int(rng.integers(len(types)))]
        count = count_answer(objects, rng) if qtype == "count" and balanced_counts else None
        q = S.make_question(scene, qtype, rng, count=count)
        if q is None:
            continue
        rel = np.zeros(S.NUM_PATCHES, dtype=bool)
        for k in q.objects:
            rel |= patches[k]
        turns.append((q.question, q.answer, rel, attribute_targets(q.question, objects, patches)))
    return turns
