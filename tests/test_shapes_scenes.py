"""The shapes scene generator: determinism, ground truth consistent with answers, seed hygiene."""

from collections import Counter

import numpy as np
import pytest

from visprune import shapes
from visprune.shapes import scenes as S


@pytest.fixture(scope="module")
def samples():
    return shapes.make_samples(n=150, seed=12345)


def _image_bytes(sample):
    return np.asarray(sample.image).tobytes()


def test_make_samples_is_deterministic(samples):
    again = shapes.make_samples(n=150, seed=12345)
    for a, b in zip(samples, again):
        assert _image_bytes(a) == _image_bytes(b)
        assert (a.question, a.answer, a.qtype, a.caption) == (b.question, b.answer, b.qtype, b.caption)
        assert np.array_equal(a.relevant_mask, b.relevant_mask)
    # a shorter call is a prefix, and another seed gives other scenes
    prefix = shapes.make_samples(n=10, seed=12345)
    assert [_image_bytes(s) for s in prefix] == [_image_bytes(s) for s in samples[:10]]
    other = shapes.make_samples(n=10, seed=12346)
    assert sum(_image_bytes(a) == _image_bytes(b) for a, b in zip(other, samples)) == 0


def test_sample_fields_have_the_documented_shapes(samples):
    for s in samples:
        assert s.image.size == (224, 224) and s.image.mode == "RGB"
        assert s.relevant_mask.shape == (224, 224) and s.relevant_mask.dtype == bool
        assert s.relevant_patches.shape == (256,) and s.relevant_patches.dtype == bool
        assert isinstance(s.question, str) and s.question
        assert len(s.answer.split()) == 1 and s.answer in shapes.ANSWERS[s.qtype] or (
            s.qtype == "side" and s.answer in ("top", "bottom")
        )
        assert 1 <= len(s.objects) <= S.MAX_OBJECTS
        assert s.seed == 12345


def test_patch_mask_is_the_pixel_mask_seen_by_16x16_patches(samples):
    for s in samples:
        grid = s.relevant_patches.reshape(16, 16)
        for r, c in zip(*np.nonzero(grid)):
            assert s.relevant_mask[r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14].any()
        assert grid.sum() == sum(
            s.relevant_mask[r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14].any()
            for r in range(16)
            for c in range(16)
        )


def test_every_question_type_appears_balanced_and_masks_are_non_empty(samples):
    counts = Counter(s.qtype for s in samples)
    assert set(counts) == set(shapes.QTYPES)
    assert max(counts.values()) - min(counts.values()) <= 1
    for s in samples:
        assert s.relevant_patches.any(), s.question  # every question is about some object
        # the question's objects are a small share of the image, as in real scenes
        assert s.relevant_patches.sum() <= 4 * 4 * 4


def test_relevant_pixels_carry_the_answer(samples):
    """The masked pixels are the colour asked for, and sit on the side given as the answer."""
    for s in samples:
        img = np.asarray(s.image).astype(int)
        if s.qtype == "colour":
            mean = img[s.relevant_mask].mean(0)
            nearest = min(S.COLOURS, key=lambda c: np.abs(np.asarray(S.COLOURS[c]) - mean).sum())
            assert nearest == s.answer
        if s.qtype == "side":
            rows, cols = np.nonzero(s.relevant_mask)
            where = {"left": cols.max() < 112, "right": cols.min() >= 112,
                     "top": rows.max() < 112, "bottom": rows.min() >= 112}
            assert where[s.answer]


def test_answers_match_the_scene_objects(samples):
    for s in samples:
        objs = s.objects
        if s.qtype == "count":
            noun = s.question.removeprefix("how many ").split()[0]
            n = sum(o.colour == noun or noun == S.PLURALS[o.shape] for o in objs)
            assert str(n) == s.answer
        if s.qtype == "exists":
            words = s.question.rstrip(" ?").split()
            colour, shape = words[-2], words[-1]
            present = any(o.colour == colour and o.shape == shape for o in objs)
            assert s.answer == ("yes" if present else "no")
        if s.qtype == "shape":
            assert s.answer in {o.shape for o in objs}


def test_caption_names_every_object_with_its_grid_position(samples):
    for s in samples[:20]:
        for o in s.objects:
            assert f"{o.size} {o.colour} {o.shape} at row {o.row} column {o.col}" in s.caption


def test_train_and_eval_splits_never_share_a_scene():
    evals = {_image_bytes(s) for s in shapes.make_samples(n=30, seed=12345)}
    evals |= {_image_bytes(s) for s in shapes.make_samples(n=30, seed=0)}
    trains = {_image_bytes(s) for s in shapes.make_samples(n=30, seed=12345, split="train")}
    trains |= {_image_bytes(s) for s in shapes.make_samples(n=30, seed=0, split="train")}
    assert not evals & trains
    # same (seed, index), different split: different random streams
    a = S.scene_rng(12345, 0, "eval").random(4)
    b = S.scene_rng(12345, 0, "train").random(4)
    assert not np.allclose(a, b)
    with pytest.raises(ValueError):
        S.scene_rng(1, 0, "test")


def test_scene_vocabulary_and_chance_are_consistent():
    assert len(shapes.SHAPES) >= 5 and len(shapes.COLOUR_NAMES) >= 6 and len(shapes.SIZES) >= 2
    assert set(shapes.CHANCE) == set(shapes.QTYPES)
    assert shapes.CHANCE["colour"] == pytest.approx(1 / len(shapes.COLOUR_NAMES))
    for words in shapes.ANSWERS.values():
        assert all(w in shapes.model.VOCAB for w in words)
    # every word of every question and caption is in the tokenizer's vocabulary (no <unk>)
    for s in shapes.make_samples(n=100, seed=3):
        for w in (s.question + " " + s.caption).split():
            assert w in shapes.model.VOCAB, w


def test_small_objects_fill_a_single_patch_and_big_ones_four():
    rng = S.scene_rng(5, 0, "eval")
    for _ in range(20):
        scene = S.random_scene(rng)
        for k, o in enumerate(scene.objects):
            patches = S.Scene.patch_mask(scene.pixel_mask([k]))
            assert patches.sum() == (1 if o.size == "small" else 4)


def test_generation_is_fast():
    import time

    t = time.perf_counter()
    shapes.make_samples(n=200, seed=1)
    assert time.perf_counter() - t < 5.0
