"""Procedural scenes for the shapes proving ground, with ground-truth masks per question.

A scene is a 224 x 224 RGB image on the 16 x 16 grid of 14-pixel patches that a CLIP ViT/14
sees. Objects are drawn on that grid so that every patch either shows a whole small object or a
quarter of a big one (never a sliver of an edge): this makes the patch tokens learnable in
minutes on a CPU without making the questions easier, since the content a question needs still
covers a small and varying share of the image (about 1-6% of the patches).

Seeds. Every scene comes from ``numpy.random.default_rng([namespace, seed, index])``; training
scenes use namespace 1 (``split="train"``), evaluation scenes namespace 0 (``split="eval"``, the
default). The two splits are separate random streams, so no evaluation seed (12345 or any other)
can reproduce a training scene.

Crowded split (``crowded=True``): scenes of 17 to 20 objects, nine in ten of them big, so that the
objects cover more patches (about 68 of 256 on average) than a 64- or 32-token budget keeps, and a
pruner must choose between objects; only the question says which. Everything else is what the
bundled model was trained on: the same shapes, colours, two sizes, backgrounds, one-cell gaps
between objects, at most four of a shape or a colour, and the same five question types. Crowded
scenes are their own random stream (``scene_rng(..., crowded=True)``), so the default split is
unchanged and a crowded seed never repeats a default scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

IMAGE_SIZE = 224
PATCH = 14
GRID = IMAGE_SIZE // PATCH  # 16
NUM_PATCHES = GRID * GRID  # 256

SHAPES = ("circle", "square", "triangle", "cross", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (45, 85, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 205),
    "orange": (245, 135, 25),
    "cyan": (40, 205, 215),
}
COLOUR_NAMES = tuple(COLOURS)
PLURALS = {s: ("crosses" if s == "cross" else f"{s}s") for s in SHAPES}
SIZES = ("small", "big")  # small: one patch, big: 2 x 2 patches
CELLS = {"small": 1, "big": 2}
BACKGROUNDS = ("plain", "noise", "stripes", "checker", "clutter")
MAX_OBJECTS = 12
MAX_PER_ATTRIBUTE = 4  # no shape and no colour appears more than 4 times (count answers 1..4)
COUNTS = tuple(str(c) for c in range(1, MAX_PER_ATTRIBUTE + 1))

QTYPES = ("colour", "shape", "count", "exists", "side")
# Answer sets per question type; chance is uniform guessing over that set.
ANSWERS = {
    "colour": COLOUR_NAMES,
    "shape": SHAPES,
    "count": COUNTS,
    "exists": ("yes", "no"),
    "side": ("left", "right"),  # or ("top", "bottom"): two options either way
}
CHANCE = {q: 1.0 / len(a) for q, a in ANSWERS.items()}

SPLITS = {"eval": 0, "train": 1}

# The crowded split: object count drawn uniformly from CROWDED_OBJECTS (inclusive), each object big
# with probability CROWDED_P_BIG (small where no big one fits any more).
CROWDED_OBJECTS = (17, 20)
CROWDED_P_BIG = 0.9
_CROWDED_STREAM = 1  # appended to the seed sequence: a stream of its own


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    row: int  # grid cell of the top-left corner
    col: int

    @property
    def cells(self) -> list[tuple[int, int]]:
        n = CELLS[self.size]
        return [(self.row + i, self.col + j) for i in range(n) for j in range(n)]

    @property
    def side(self) -> str:
        return "left" if self.col < GRID // 2 else "right"

    @property
    def vertical(self) -> str:
        return "top" if self.row < GRID // 2 else "bottom"


@dataclass
class Scene:
    objects: list[SceneObject]
    background: str
    image: np.ndarray  # uint8 [224, 224, 3]
    object_pixels: np.ndarray  # int16 [224, 224], index of the object drawn there, -1 for none
    cell_object: np.ndarray = field(init=False)  # int16 [16, 16], object whose footprint covers it

    def __post_init__(self) -> None:
        self.cell_object = np.full((GRID, GRID), -1, dtype=np.int16)
        for k, obj in enumerate(self.objects):
            for r, c in obj.cells:
                self.cell_object[r, c] = k

    def pixel_mask(self, indices) -> np.ndarray:
        """Per-pixel bool mask [224, 224] of the drawn pixels of the given objects."""
        if len(indices) == 0:
            return np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        return np.isin(self.object_pixels, np.asarray(list(indices), dtype=np.int16))

    @staticmethod
    def patch_mask(pixel_mask: np.ndarray) -> np.ndarray:
        """Patches (256, row-major) that contain at least one pixel of a per-pixel mask."""
        return pixel_mask.reshape(GRID, PATCH, GRID, PATCH).any(axis=(1, 3)).reshape(-1)

    def caption(self) -> str:
        parts = [f"{o.size} {o.colour} {o.shape} at row {o.row} column {o.col}" for o in self.objects]
        return " , ".join(parts) + " ."

    def patch_targets(self) -> dict[str, np.ndarray]:
        """Per-patch labels (int64 [256]) of the object whose footprint covers the patch.

        colour: 0 background, 1..7; shape: 0, 1..5; size: 0, 1 small, 2 big; part: 0, 1 small
        object, 2..5 quadrant of a big object (top-left, top-right, bottom-left, bottom-right).
        """
        out = {k: np.zeros(NUM_PATCHES, dtype=np.int64) for k in ("colour", "shape", "size", "part")}
        for k, o in enumerate(self.objects):
            for r, c in o.cells:
                p = r * GRID + c
                out["colour"][p] = COLOUR_NAMES.index(o.colour) + 1
                out["shape"][p] = SHAPES.index(o.shape) + 1
                out["size"][p] = SIZES.index(o.size) + 1
                out["part"][p] = 1 if o.size == "small" else 2 + 2 * (r - o.row) + (c - o.col)
        return out


@dataclass
class Question:
    qtype: str
    question: str
    answer: str
    objects: tuple[int, ...]  # indices of the objects the question is about


@dataclass
class Sample:
    """One question about one scene, with the ground truth of where its answer lies."""

    image: Image.Image
    question: str
    answer: str
    qtype: str
    caption: str
    relevant_mask: np.ndarray  # bool [224, 224]
    relevant_patches: np.ndarray  # bool [256], 16 x 16 row-major
    seed: int
    index: int
    split: str
    objects: list[SceneObject]
    object_patches: np.ndarray  # bool [256]: patches showing any object (relevant_patches is a subset)
    crowded: bool = False


# ----------------------------------------------------------------------------- drawing


def _shape_mask(shape: str, n: int) -> np.ndarray:
    """Binary n x n mask of a shape, supersampled 4x and thresholded at half coverage."""
    s = 4
    y, x = (np.mgrid[0 : n * s, 0 : n * s] + 0.5) / (n * s) * 2 - 1  # [-1, 1]
    if shape == "circle":
        m = x**2 + y**2 <= 0.97**2
    elif shape == "square":
        m = (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8)
    elif shape == "triangle":
        m = (y <= 0.95) & (y >= -0.95) & (np.abs(x) <= (y + 0.95) / 1.9 * 0.98)
    elif shape == "cross":
        w = 0.33
        m = ((np.abs(x) <= w) & (np.abs(y) <= 0.97)) | ((np.abs(y) <= w) & (np.abs(x) <= 0.97))
    elif shape == "diamond":
        m = np.abs(x) + np.abs(y) <= 1.0
    else:
        raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")
    return m.reshape(n, s, n, s).mean(axis=(1, 3)) >= 0.5


_MASKS = {(sh, sz): _shape_mask(sh, CELLS[sz] * PATCH - 2) for sh in SHAPES for sz in SIZES}


def _background(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Low-saturation backgrounds, so that colour always belongs to an object."""
    base = rng.uniform(25, 120)
    tint = rng.uniform(-8, 8, size=3)
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    img[:] = base + tint
    if kind == "plain":
        return img
    if kind == "noise":
        img += rng.normal(0, rng.uniform(6, 22), size=(IMAGE_SIZE, IMAGE_SIZE, 1))
        return img
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    amp = rng.uniform(15, 40)
    if kind == "stripes":
        period = rng.uniform(6, 30)
        angle = rng.uniform(0, np.pi)
        t = (xx * np.cos(angle) + yy * np.sin(angle)) / period
        img += (amp * ((t % 1.0) < 0.5))[..., None]
        return img
    if kind == "checker":
        period = int(rng.integers(5, 24))
        img += (amp * (((xx // period) + (yy // period)) % 2))[..., None]
        return img
    if kind == "clutter":  # many small grey marks: a busy, high-information background
        for _ in range(int(rng.integers(30, 90))):
            h, w = rng.integers(1, 10, size=2)
            r0, c0 = rng.integers(0, IMAGE_SIZE - 10, size=2)
            img[r0 : r0 + h, c0 : c0 + w] += rng.uniform(-45, 45) + rng.uniform(-6, 6, size=3)
        img += rng.normal(0, 5, size=(IMAGE_SIZE, IMAGE_SIZE, 1))
        return img
    raise ValueError(f"unknown background {kind!r}; valid: {BACKGROUNDS}")


def _render(rng: np.random.Generator, objects: list[SceneObject], background: str) -> Scene:
    img = _background(rng, background)
    owner = np.full((IMAGE_SIZE, IMAGE_SIZE), -1, dtype=np.int16)
    for k, o in enumerate(objects):
        m = _MASKS[(o.shape, o.size)]
        n = m.shape[0]
        y0, x0 = o.row * PATCH + 1, o.col * PATCH + 1
        colour = np.asarray(COLOURS[o.colour], dtype=np.float32) + rng.uniform(-15, 15, size=3)
        img[y0 : y0 + n, x0 : x0 + n][m] = colour
        owner[y0 : y0 + n, x0 : x0 + n][m] = k
    image = np.clip(img, 0, 255).astype(np.uint8)
    return Scene(objects=objects, background=background, image=image, object_pixels=owner)


# ----------------------------------------------------------------------------- scenes


def _allowed_origins(size: str) -> list[tuple[int, int]]:
    """Big objects never straddle the middle lines, so left/right and top/bottom are exact."""
    n = CELLS[size]
    ok = [i for i in range(GRID - n + 1) if not (i < GRID // 2 < i + n)]
    return [(r, c) for r in ok for c in ok]


_ORIGINS = {sz: _allowed_origins(sz) for sz in SIZES}


def random_scene(rng: np.random.Generator, n_objects: int | None = None, crowded: bool = False) -> Scene:
    """A scene of 1..12 objects that do not touch (not even diagonally) on the patch grid.

    ``crowded=True``: 17..20 objects, mostly big (:func:`crowded_scene`).
    """
    if crowded:
        return crowded_scene(rng, n_objects)
    if n_objects is None:
        n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    layout = _Layout()
    for _ in range(n_objects * 20):
        if len(layout.objects) == n_objects:
            break
        size = SIZES[int(rng.random() < 0.5)]
        shapes, colours = layout.shapes_left(), layout.colours_left()
        shape = shapes[int(rng.integers(len(shapes)))]
        colour = colours[int(rng.integers(len(colours)))]
        origins = _ORIGINS[size]
        r, c = origins[int(rng.integers(len(origins)))]
        if layout.fits(size, r, c):
            layout.place(SceneObject(shape, colour, size, r, c))
    return layout.render(rng, background)


def crowded_scene(rng: np.random.Generator, n_objects: int | None = None) -> Scene:
    """A crowded scene: CROWDED_OBJECTS objects, big with probability CROWDED_P_BIG, same rules.

    Objects keep the one-cell gap and the cap of MAX_PER_ATTRIBUTE per shape and per colour (so
    at most 20 objects and count answers still 1..4). Each object is placed on a free origin drawn
    among all free ones (not by rejection, which stalls on a full grid); a big object that no
    longer fits anywhere becomes small, and the scene stops early if even a small one cannot fit.
    """
    if n_objects is None:
        lo, hi = CROWDED_OBJECTS
        n_objects = int(rng.integers(lo, hi + 1))
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    layout = _Layout()
    for _ in range(n_objects):
        shapes, colours = layout.shapes_left(), layout.colours_left()
        if not shapes or not colours:
            break
        size = SIZES[int(rng.random() < CROWDED_P_BIG)]
        shape = shapes[int(rng.integers(len(shapes)))]
        colour = colours[int(rng.integers(len(colours)))]
        free: list[tuple[int, int]] = []
        for size in (size, "small") if size == "big" else (size,):
            free = [(r, c) for r, c in _ORIGINS[size] if layout.fits(size, r, c)]
            if free:
                break
        if not free:
            break
        r, c = free[int(rng.integers(len(free)))]
        layout.place(SceneObject(shape, colour, size, r, c))
    return layout.render(rng, background)


class _Layout:
    """The objects placed so far on the patch grid: cells taken (padded by one), counts per attribute."""

    def __init__(self) -> None:
        self.taken = np.zeros((GRID + 2, GRID + 2), dtype=bool)
        self.objects: list[SceneObject] = []
        self.shape_count = dict.fromkeys(SHAPES, 0)
        self.colour_count = dict.fromkeys(COLOUR_NAMES, 0)

    def shapes_left(self) -> list[str]:
        return [s for s in SHAPES if self.shape_count[s] < MAX_PER_ATTRIBUTE]

    def colours_left(self) -> list[str]:
        return [c for c in COLOUR_NAMES if self.colour_count[c] < MAX_PER_ATTRIBUTE]

    def fits(self, size: str, r: int, c: int) -> bool:
        """Whether an object of ``size`` at origin (r, c) keeps a one-cell gap to every other."""
        n = CELLS[size]
        return not self.taken[r : r + n + 2, c : c + n + 2].any()  # footprint plus a one-cell margin

    def place(self, obj: SceneObject) -> None:
        n = CELLS[obj.size]
        self.taken[obj.row + 1 : obj.row + n + 1, obj.col + 1 : obj.col + n + 1] = True
        self.objects.append(obj)
        self.shape_count[obj.shape] += 1
        self.colour_count[obj.colour] += 1

    def render(self, rng: np.random.Generator, background) -> Scene:
        self.objects.sort(key=lambda o: (o.row, o.col))
        return _render(rng, self.objects, background)


# ----------------------------------------------------------------------------- questions


def _unique(objects, idx, keys) -> bool:
    o = objects[idx]
    return sum(all(getattr(p, k) == getattr(o, k) for k in keys) for p in objects) == 1


def _refer(objects, idx, options) -> str | None:
    """Shortest description of object idx, from attribute sets in `options`, that is unique."""
    o = objects[idx]
    for keys in options:
        if _unique(objects, idx, keys):
            words = [getattr(o, k) for k in ("size", "colour", "shape") if k in keys]
            if "shape" not in keys:
                words.append("object")
            return " ".join(words)
    return None


def make_question(
    scene: Scene, qtype: str, rng: np.random.Generator, count: int | None = None
) -> Question | None:
    """One question of type qtype about the scene, or None if the scene cannot support it.

    For "count", `count` fixes the answer (1..4); by default it is drawn uniformly.
    """
    objs = scene.objects
    if not objs:
        return None
    order = rng.permutation(len(objs))
    if qtype == "colour":
        for i in order:
            ref = _refer(objs, i, [("shape",), ("size", "shape")])
            if ref:
                return Question(qtype, f"what colour is the {ref} ?", objs[i].colour, (int(i),))
        return None
    if qtype == "shape":
        for i in order:
            ref = _refer(objs, i, [("colour",), ("size", "colour")])
            if ref:
                return Question(qtype, f"what shape is the {ref} ?", objs[i].shape, (int(i),))
        return None
    if qtype == "count":
        if count is None:
            count = int(rng.integers(1, MAX_PER_ATTRIBUTE + 1))
        target = str(count)
        cands = []
        for attr in ("shape", "colour"):
            values = SHAPES if attr == "shape" else COLOUR_NAMES
            for v in values:
                idx = tuple(k for k, o in enumerate(objs) if getattr(o, attr) == v)
                if len(idx) == int(target):
                    cands.append((attr, v, idx))
        if not cands:
            return None
        attr, v, idx = cands[int(rng.integers(len(cands)))]
        noun = PLURALS[v] if attr == "shape" else f"{v} objects"
        return Question(qtype, f"how many {noun} are there ?", target, idx)
    if qtype == "exists":
        i = int(order[0])
        o = objs[i]
        if rng.random() < 0.5:
            return Question(qtype, f"is there a {o.colour} {o.shape} ?", "yes", (i,))
        present = {(p.colour, p.shape) for p in objs}
        # a near miss: keep one attribute of a present object, change the other
        if rng.random() < 0.5:
            options = [(c, o.shape) for c in COLOUR_NAMES if (c, o.shape) not in present]
        else:
            options = [(o.colour, s) for s in SHAPES if (o.colour, s) not in present]
        if not options:
            return None
        colour, shape = options[int(rng.integers(len(options)))]
        # relevant: the objects that must be inspected to answer "no" (same colour or shape)
        idx = tuple(k for k, p in enumerate(objs) if p.colour == colour or p.shape == shape)
        return Question(qtype, f"is there a {colour} {shape} ?", "no", idx)
    if qtype == "side":
        for i in order:
            ref = _refer(objs, i, [("colour", "shape"), ("size", "colour", "shape")])
            if ref:
                o = objs[i]
                if rng.random() < 0.5:
                    return Question(qtype, f"is the {ref} on the left or right ?", o.side, (int(i),))
                return Question(qtype, f"is the {ref} at the top or bottom ?", o.vertical, (int(i),))
        return None
    raise ValueError(f"unknown question type {qtype!r}; valid: {QTYPES}")


def scene_rng(seed: int, index: int, split: str = "eval", crowded: bool = False) -> np.random.Generator:
    """The random stream of one scene; train and eval are separate namespaces, crowded scenes a
    stream of their own in each."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {tuple(SPLITS)}")
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be non-negative")
    key = [SPLITS[split], int(seed), int(index)] + ([_CROWDED_STREAM] if crowded else [])
    return np.random.default_rng(key)


def make_sample(seed: int, index: int, qtype: str | None = None, split: str = "eval",
                crowded: bool = False) -> Sample:
    """Sample `index` of the stream `seed` (of `split`): one scene and one question about it.

    ``crowded=True``: a crowded scene (:func:`crowded_scene`), from the crowded stream.
    """
    if qtype is None:
        qtype = QTYPES[index % len(QTYPES)]
    rng = scene_rng(seed, index, split, crowded)
    # drawn once, so that count answers stay balanced over 1..4 however often we redraw scenes
    count = int(rng.integers(1, MAX_PER_ATTRIBUTE + 1))
    while True:  # some scenes cannot carry a given question (e.g. no unique shape): redraw
        scene = random_scene(rng, crowded=crowded)
        q = make_question(scene, qtype, rng, count=count)
        if q is not None:
            break
    pix = scene.pixel_mask(q.objects)
    return Sample(
        image=Image.fromarray(scene.image),
        question=q.question,
        answer=q.answer,
        qtype=q.qtype,
        caption=scene.caption(),
        relevant_mask=pix,
        relevant_patches=Scene.patch_mask(pix),
        seed=int(seed),
        index=int(index),
        split=split,
        objects=list(scene.objects),
        object_patches=Scene.patch_mask(scene.object_pixels >= 0),
        crowded=crowded,
    )


def make_samples(n: int = 200, seed: int = 12345, split: str = "eval", crowded: bool = False) -> list[Sample]:
    """n evaluation samples (question types in turn, so balanced), deterministic in (n, seed).

    Sample i depends only on (split, seed, i), so make_samples(100, s) is a prefix of
    make_samples(200, s). Training uses split="train", a separate random stream. ``crowded=True``:
    the crowded split (17-20 mostly big objects, more object patches than a 64-token budget; see the
    module docstring), its own stream.
    """
    return [make_sample(seed, i, split=split, crowded=crowded) for i in range(n)]
