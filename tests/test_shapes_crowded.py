"""The crowded split of the shapes proving ground (issue 24, item 3): objects cover more patches than
the budget, questions pick one of them; the default split is unchanged bit for bit."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from visprune import shapes
from visprune.shapes import scenes as S

# sha256 of _default_digest() computed on the generator before the crowded split existed (commit
# aee4f35): existing seeds must keep giving the same scenes, questions and masks.
DEFAULT_DIGEST = "e26549c13155fbe10753dea396ce5490bf8e3fe8e8f45f510dcd2c86ef70a730"


def _default_digest() -> str:
    """sha256 over the default split's images, questions, answers, captions and masks (eval and train)."""
    h = hashlib.sha256()
    for split in ("eval", "train"):
        for s in shapes.make_samples(n=25, seed=12345, split=split):
            h.update(np.asarray(s.image).tobytes())
            h.update("|".join((s.question, s.answer, s.qtype, s.caption)).encode())
            h.update(s.relevant_mask.tobytes())
            h.update(s.relevant_patches.tobytes())
    for i in range(5):  # random_scene as the training code calls it
        h.update(S.random_scene(S.scene_rng(3, i, "train")).image.tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def crowded():
    return shapes.make_samples(n=100, seed=12345, crowded=True)


def test_default_split_is_unchanged_bit_for_bit():
    assert _default_digest() == DEFAULT_DIGEST
    default = shapes.make_samples(n=5, seed=12345)
    assert all(not s.crowded for s in default)
    assert [np.asarray(s.image).tobytes() for s in default] == [
        np.asarray(s.image).tobytes() for s in shapes.make_samples(n=5, seed=12345, crowded=False)]


def test_crowded_scenes_cover_more_patches_than_the_budget(crowded):
    objects = np.array([s.object_patches.sum() for s in crowded])
    assert objects.mean() > 64  # more than a 64-token budget keeps, on average
    assert objects.min() > 32  # and always more than 32
    assert all(s.crowded for s in crowded)
    # the default split is nowhere near: a budget of 64 keeps every object there
    default = np.array([s.object_patches.sum() for s in shapes.make_samples(n=100, seed=12345)])
    assert default.max() <= 4 * S.MAX_OBJECTS and default.mean() < 32


def test_relevant_patches_are_a_few_of_the_object_patches(crowded):
    for s in crowded:
        assert s.relevant_patches.any(), s.question
        assert not (s.relevant_patches & ~s.object_patches).any()  # a subset
        cells = np.zeros(S.NUM_PATCHES, dtype=bool)
        for o in s.objects:
            for r, c in o.cells:
                cells[r * S.GRID + c] = True
        assert np.array_equal(cells, s.object_patches)  # every footprint cell shows its object
    # the question singles objects out: on average far fewer patches than the scene's objects
    assert np.mean([s.relevant_patches.sum() for s in crowded]) < np.mean([s.object_patches.sum() for s in crowded]) / 4


def test_crowded_scenes_stay_within_the_training_vocabulary(crowded):
    """Same kinds, sizes, gaps and caps as the scenes the bundled model was trained on; more objects."""
    lo, hi = S.CROWDED_OBJECTS
    for s in crowded:
        assert S.MAX_OBJECTS < lo <= len(s.objects) <= hi
        assert max(Counter(o.shape for o in s.objects).values()) <= S.MAX_PER_ATTRIBUTE
        assert max(Counter(o.colour for o in s.objects).values()) <= S.MAX_PER_ATTRIBUTE
        grid = np.full((S.GRID, S.GRID), -1)
        for k, o in enumerate(s.objects):
            assert o.size in S.SIZES and o.shape in S.SHAPES and o.colour in S.COLOURS
            assert (o.row, o.col) in S._ORIGINS[o.size]  # big ones never straddle a middle line
            for r, c in o.cells:
                # footprint plus a one-cell margin is free of other objects (no touching, not even diagonally)
                near = grid[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
                assert ((near == -1) | (near == k)).all()
                grid[r, c] = k
        for w in s.question.split():
            assert w in shapes.model.VOCAB, w
    counts = Counter(s.qtype for s in crowded)
    assert set(counts) == set(shapes.QTYPES) and max(counts.values()) - min(counts.values()) <= 1
    assert {s.answer for s in crowded if s.qtype == "count"} <= set(S.COUNTS)


def test_crowded_split_is_deterministic_and_its_own_stream(crowded):
    again = shapes.make_samples(n=10, seed=12345, crowded=True)
    for a, b in zip(again, crowded):
        assert np.asarray(a.image).tobytes() == np.asarray(b.image).tobytes() and a.question == b.question
    default = {np.asarray(s.image).tobytes() for s in shapes.make_samples(n=30, seed=12345)}
    assert not default & {np.asarray(s.image).tobytes() for s in crowded[:30]}
    assert not np.allclose(S.scene_rng(12345, 0, "eval").random(4), S.scene_rng(12345, 0, "eval", crowded=True).random(4))


def test_build_task_shapes_vqa_crowded():
    from visprune.evaluation import build_task
    from visprune.evaluation.tasks import TASKS

    assert "shapes-vqa-crowded" in TASKS.names()
    t = build_task("shapes-vqa-crowded", n=5, seed=0)
    samples = shapes.make_samples(n=5, seed=0, crowded=True)
    assert t.kind == "vqa" and t.grid == shapes.GRID and t.meta["crowded"] is True
    assert [e.question for e in t.examples] == [s.question for s in samples]
    assert [e.references for e in t.examples] == [[s.answer] for s in samples]
    assert [e.relevant_patches for e in t.examples] == [[bool(x) for x in s.relevant_patches] for s in samples]
    e = t.examples[0]
    assert t.score(e.references[0] + " .", e.references) == 1.0 and t.score("zebra", e.references) == 0.0
    assert "crowded" not in build_task("shapes-vqa", n=1, seed=0).meta
    with pytest.raises(Exception, match="takes no --images"):
        build_task("shapes-vqa-crowded", n=1, images=".")


def test_visprune_eval_runs_the_crowded_task(tmp_path):
    from visprune.apps.cli import main

    out = tmp_path / "out"
    rc = main(["eval", "--model", "shapes", "--task", "shapes-vqa-crowded", "--n", "3", "--seed", "1",
               "--method", "atp:k=32", "--method", "cls:k=32", "--timing", "0", "--no-flops", "--quiet",
               "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "shapes-vqa-crowded"
    rows = {r["method"]: r for r in summary["methods"]}
    assert set(rows) == {"none", "atp:k=32", "cls:k=32"}
    for r in rows.values():
        assert r["n"] == 3 and r["accuracy"] is not None and 0.0 <= r["grounding_recall"] <= 1.0
    assert rows["atp:k=32"]["kept_tokens"]["mean"] == 32
