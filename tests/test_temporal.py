"""The temporal stage of videos (``PruneConfig(temporal=tau)``): tokens repeating the frame group before
them are dropped before the scorer and the budget, which then choose among the survivors."""

import math

import pytest
import torch

import visprune
from helpers import assert_batched_equals_one_by_one, pruned_selection
from visprune import PruneConfig, ops, prune_, unprune_
from visprune import testing as T

KINDS = {"qwen2_vl": T.qwen2_vl, "qwen2_5_vl": T.qwen2_5_vl, "qwen3_vl": T.qwen3_vl, "qwen3_5": T.qwen3_5}
SIZE = (112, 168)  # 12 x 8 patches: 24 merged tokens per frame pair (temporal group)
GROUP = 24


def frames(n: int, seed: int = 0):
    return T.images(n, size=SIZE, seed=seed)


def still(n: int, seed: int = 0):
    return frames(1, seed) * n  # the same frame repeated


def video_inputs(proc, videos, questions=None):
    questions = questions or ["what moves ?"] * len(videos)
    return proc(videos=videos, text=[T.qwen_prompt(q, n_images=0, n_videos=1) for q in questions])


@pytest.mark.parametrize("kind", list(KINDS))
@torch.no_grad()
def test_a_still_clip_keeps_one_frame_group_and_a_busy_one_more(kind):
    """keep=1.0 keeps every non-repeat: a still clip of 6 frames (3 groups of 24 tokens) keeps its first
    group, a clip of 6 different frames keeps every group, a clip still for 4 frames then moving keeps 2."""
    model, proc = KINDS[kind]()
    cfg = PruneConfig(scorer="atp", keep=1.0, temporal=0.99, text_encoder=None)
    got = {}
    for name, clip in {"still": still(6), "busy": frames(6, seed=4), "half": still(4) + frames(2, seed=5)}.items():
        sel = pruned_selection(model, proc, video_inputs(proc, [clip]), cfg)
        got[name] = (len(sel.kept[0]), sel.temporal_dropped, sel.group_kept)
    assert got["still"] == (GROUP, [2 * GROUP], [[GROUP, 0, 0]])
    assert got["busy"] == (3 * GROUP, [0], [[GROUP, GROUP, GROUP]])
    assert got["half"] == (2 * GROUP, [GROUP], [[GROUP, 0, GROUP]])


@pytest.fixture(scope="module")
def qwen():
    model, proc = T.qwen2_vl()
    pics = frames(2, seed=3)
    vids = [still(6, seed=1), frames(6, seed=2)]
    texts = [T.qwen_prompt("what changed ?", n_images=1, n_videos=1), T.qwen_prompt("how many ?", n_images=0, n_videos=1)]
    batch = proc(images=pics[:1], videos=vids, text=texts)
    singles = [proc(images=pics[:1], videos=vids[:1], text=texts[:1]), proc(videos=vids[1:], text=texts[1:])]
    return model, proc, batch, singles


BUDGETS = {"fixed": {"k": 30}, "ratio": {"keep": 0.5}, "energy": {"energy": 0.8, "min_keep": 2}}


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("scorer", ["atp", "cls", "random"])
@torch.no_grad()
def test_the_stage_composes_with_scorers_and_budgets(qwen, scorer, budget):
    """The budget counts the survivors only (ratio: keep of the survivors; fixed: k capped at them),
    no repeat is ever kept, the image entry is left alone, and the batch selects as its rows alone."""
    model, proc, batch, singles = qwen
    base = dict(scorer=scorer, budget=budget, text_encoder=None, **BUDGETS[budget])
    off = pruned_selection(model, proc, batch, PruneConfig(**base))
    prune_(model, PruneConfig(**base, temporal=0.99), processor=proc)
    try:
        model(**batch)
        sel = visprune.last_selection(model)
        one = []
        for inputs in singles:
            model(**inputs)
            one += visprune.last_selection(model).kept
    finally:
        unprune_(model)
    assert sel.modalities == ["image", "video", "video"]
    assert sel.temporal_dropped == [2 * GROUP, 0]  # the still video loses its 2 repeated groups, the busy one none
    survivors = [GROUP, GROUP, 3 * GROUP]
    for i, (kept, n) in enumerate(zip(sel.kept, survivors)):
        assert not sel.repeats[i][kept].any()
        if budget == "fixed":
            assert len(kept) == min(30, n)
        if budget == "ratio":
            assert len(kept) == math.floor(0.5 * n + 0.5)
        assert 1 <= len(kept) <= n
    assert torch.equal(sel.kept[0], off.kept[0])  # the image: as without the stage
    assert torch.equal(sel.kept[2], off.kept[2])  # a video with no repeat: as without the stage
    assert len(one) == 3 and all(torch.equal(a, b) for a, b in zip(one, sel.kept))


@torch.no_grad()
def test_every_pre_llm_scorer_keeps_no_repeat(qwen):
    """Scorers with their own selection (DivPrune, VisionZip, CDPruner, ...) choose among the survivors too."""
    model, proc, batch, _ = qwen
    for scorer in visprune.list_scorers():
        if scorer == "text":  # no CLIP text encoder shares Qwen's tower space
            continue
        try:
            prune_(model, PruneConfig(scorer=scorer, keep=0.5, text_encoder=None, llm_layer=1, temporal=0.99), processor=proc)
        except TypeError:  # refused on Qwen whatever the stage, or with the stage (pool)
            continue
        try:
            model(**batch)
            sel = visprune.last_selection(model)
        finally:
            unprune_(model)
        if not sel.own_order:
            assert not any(sel.repeats[i][k].any() for i, k in enumerate(sel.kept)), scorer
        assert sel.sent[1] <= GROUP, scorer  # the still video: half its survivors (VisionZip-like: plus merged)


@torch.no_grad()
def test_batched_clips_of_different_lengths_equal_one_by_one():
    model, proc = T.qwen2_vl()
    videos = [still(4), frames(6, seed=2)]  # 2 still groups; 3 groups of different frames
    texts = ["what moves ?", "how many frames ?"]
    batch = video_inputs(proc, videos, texts)
    singles = [video_inputs(proc, [v], [t]) for v, t in zip(videos, texts)]
    prune_(model, PruneConfig(scorer="atp", keep=0.5, temporal=0.99), processor=proc)
    try:
        kept = assert_batched_equals_one_by_one(model, batch, singles, max_new_tokens=4)
        model(**batch)
        dropped = visprune.last_selection(model).temporal_dropped
    finally:
        unprune_(model)
    assert dropped == [GROUP, 0] and [len(k) for k in kept] == [GROUP // 2, 3 * GROUP // 2]


def test_temporal_on_a_model_without_videos_is_refused_at_prune():
    model, _ = T.llava()
    with pytest.raises(TypeError, match="takes no video inputs"):
        prune_(model, PruneConfig(scorer="cls", keep=0.5, temporal=0.9))
    assert not visprune.is_pruned(model)


@torch.no_grad()
def test_images_are_left_alone_and_keep_all_is_stock():
    """On an image-only prompt the stage does nothing: keep=1.0 with it equals the stock model, bitwise."""
    model, proc = T.qwen2_vl()
    inputs = proc(images=frames(1), text=[T.qwen_prompt("q ?")])
    ref = model(**inputs).logits
    prune_(model, PruneConfig(scorer="atp", keep=1.0, temporal=0.5), processor=proc)
    try:
        assert torch.equal(model(**inputs).logits, ref)
        assert visprune.last_selection(model).temporal_dropped == []
    finally:
        unprune_(model)


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, math.nan, True, "0.9", [0.9]])
def test_bad_temporal_values_are_refused(bad):
    with pytest.raises(ValueError, match=r"temporal must be in \(0, 1\]"):
        PruneConfig(temporal=bad)


def test_temporal_round_trips_and_defaults_off():
    assert PruneConfig().temporal is None
    cfg = PruneConfig(scorer="cls", keep=0.5, temporal=0.9)
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["temporal"] == 0.9


def test_repeats_are_judged_against_the_last_kept_token_at_their_place():
    """A slow drift: each group is close to the one before but the third is far from the first, which
    stays the anchor while its successors repeat it; group 0 never repeats; exact copies always do."""
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    turn = [base, torch.tensor([[1.0, 0.3], [0.0, 1.0]]), torch.tensor([[1.0, 0.6], [0.0, 1.0]])]
    feats = torch.cat(turn)  # 3 groups of a 1 x 2 grid; cosines 0 -> 1: 0.958, 1 -> 2: 0.969, 0 -> 2: 0.858
    got = ops.temporal_repeats(feats, (3, 1, 2), 0.95)
    assert got.tolist() == [False, False, True, True, False, True]  # group 2 drifted too far from group 0
    assert ops.temporal_repeats(feats, (3, 1, 2), 1.0).tolist() == [False, False, False, True, False, True]
    with pytest.raises(ValueError, match="has 6 tokens"):
        ops.temporal_repeats(feats[:5], (3, 1, 2), 0.9)
