"""E-AdaPrune for video (``PruneConfig(video_budget=...)``, issue #22): the energy budget of a clip divided
among its temporal groups by each group's own spectral energy ("clip-split", the default), one pool over
the clip ("clip"), or each group's own energy budget ("frame")."""

import math

import pytest
import torch

import visprune
from helpers import assert_batched_equals_one_by_one, pruned_selection
from visprune import PruneConfig, ops, prune_, unprune_
from visprune import testing as T
from visprune.scoring.budgets import EnergyBudget
from visprune.scoring.context import ScoreContext
from visprune.scoring.decide import decide
from visprune.scoring.scorers import VisionZipScorer
from visprune.scoring.scorers.base import Scorer

SIZE = (112, 168)  # 12 x 8 patches: 24 merged tokens per frame pair (temporal group)
GROUP = 24


def frames(n: int, seed: int = 0):
    return T.images(n, size=SIZE, seed=seed)


def video_inputs(proc, videos, questions=None):
    questions = questions or ["what moves ?"] * len(videos)
    return proc(videos=videos, text=[T.qwen_prompt(q, n_images=0, n_videos=1) for q in questions])


def reference_split(k: int, energies: list[float], caps: list[int]) -> list[int]:
    """The rule written out another way (no group reaches its cap in the cases used): floor of the
    proportional quota, then the units left to the largest remainders, earlier group on ties."""
    quota = [k * e / sum(energies) for e in energies]
    out = [math.floor(q) for q in quota]
    for g in sorted(range(len(quota)), key=lambda g: (out[g] - quota[g], g))[: k - sum(out)]:
        out[g] += 1
    assert all(o <= c for o, c in zip(out, caps))
    return out


def group_energy(x: torch.Tensor) -> float:
    """Sum of squared singular values of a group's tokens."""
    return float((torch.linalg.svdvals(x.double()) ** 2).sum())


def test_apportion_sums_caps_and_rounds_by_largest_remainder():
    assert ops.apportion(10, [1, 2, 7], [9, 9, 9]) == [1, 2, 7]
    assert ops.apportion(10, [1, 2, 7], [9, 9, 5]) == [2, 3, 5]  # the capped group's surplus shared 1 : 2
    assert ops.apportion(5, [1, 1, 1], [5, 5, 5]) == [2, 2, 1]  # equal remainders: the earlier groups
    assert ops.apportion(4, [0, 3, 1], [2, 0, 4]) == [0, 0, 4]  # a group without candidates gets none
    assert ops.apportion(3, [0, 0], [2, 2]) == [2, 1]  # no energy anywhere: equal shares
    assert ops.apportion(50, [1, 1], [3, 4]) == [3, 4]  # never more than the candidates
    for k in range(0, 20):
        got = ops.apportion(k, [0.3, 2.0, 1.1, 0.0], [4, 6, 5, 3])
        assert sum(got) == min(k, 18) and all(0 <= g <= c for g, c in zip(got, [4, 6, 5, 3]))


def hand_made(video_budget: str, energy: float = 0.9):
    """A batch of one image (6 tokens) and one video of 3 groups of 8 tokens whose scales differ (group 1
    the strongest, group 0 the weakest), scores favouring the weak group's tokens."""
    gen = torch.Generator().manual_seed(0)
    d = 6
    image = torch.randn(6, d, generator=gen)
    video = torch.cat([s * torch.randn(8, d, generator=gen) for s in (0.5, 3.0, 1.5)])
    feats, valid = ops.pad_ragged([image, video])
    groups = torch.full(valid.shape, -1, dtype=torch.int64)
    groups[1, :24] = torch.arange(3).repeat_interleave(8)
    cfg = PruneConfig(scorer="random", energy=energy, video_budget=video_budget)
    ctx = ScoreContext(features=feats, valid=valid, protected=torch.zeros_like(valid), config=cfg, groups=groups)
    scores = torch.linspace(1.0, 0.0, feats.shape[1]).expand(2, -1).clone()  # earlier tokens score higher
    return ctx, scores, image, video


def kept_per_group(kept: torch.Tensor, size: int = 8) -> list[int]:
    return torch.bincount(kept // size, minlength=3).tolist()


def test_clip_split_divides_the_clip_budget_by_group_energy():
    ctx, scores, image, video = hand_made("clip-split")
    budget = EnergyBudget()
    k = budget(ctx, scores)
    clip_k = int(ops.energy_budget(video[None], 0.9)[0])
    assert k.tolist() == [int(ops.energy_budget(image[None], 0.9)[0]), clip_k]  # the clip's K, as before
    energies = [group_energy(video[8 * g: 8 * g + 8]) for g in range(3)]
    want = reference_split(clip_k, energies, [8, 8, 8])
    kept, _ = decide(Scorer(), budget, ctx, scores)
    got = kept_per_group(kept[1])
    assert got == want and sum(got) == clip_k
    assert got[1] > got[2] > got[0]  # more energy, more tokens
    for g in range(3):  # each group's part: its own top-scoring tokens (here its first ones)
        idx = kept[1][(kept[1] // 8) == g]
        assert idx.tolist() == list(range(8 * g, 8 * g + got[g]))
    assert kept[0].tolist() == list(range(k[0].item()))  # the image: its top k, as before


def test_clip_is_todays_single_pool_and_frame_the_per_group_budgets():
    ctx, scores, image, video = hand_made("clip")
    kept, _ = decide(Scorer(), EnergyBudget(), ctx, scores)
    clip_k = int(ops.energy_budget(video[None], 0.9)[0])
    assert kept[1].tolist() == list(range(clip_k))  # the top K anywhere in the clip: the weak group first
    ctx, scores, image, video = hand_made("frame")
    budget = EnergyBudget()
    kept, _ = decide(Scorer(), budget, ctx, scores)
    want = [int(ops.energy_budget(video[8 * g: 8 * g + 8][None], 0.9)[0]) for g in range(3)]
    assert kept_per_group(kept[1]) == want and len(kept[1]) == sum(want)


@pytest.fixture(scope="module")
def qwen():
    return T.qwen2_vl()


def selection(model, proc, inputs, **cfg):
    return pruned_selection(model, proc, inputs, PruneConfig(scorer="atp", text_encoder=None, **cfg))


@torch.no_grad()
def test_group_kept_follows_the_rule_on_a_model(qwen):
    model, proc = qwen
    inputs = video_inputs(proc, [frames(6, seed=2)])
    sel = selection(model, proc, inputs, energy=0.8)
    feats = sel.encoded.features[0]
    clip_k = int(ops.energy_budget(feats[None], 0.8)[0])
    energies = [group_energy(feats[GROUP * g: GROUP * (g + 1)]) for g in range(3)]
    assert sel.group_kept == [ops.apportion(clip_k, energies, [GROUP] * 3)] and len(sel.kept[0]) == clip_k
    for g in range(3):  # within each group its top-scoring tokens
        s = sel.scores[0, GROUP * g: GROUP * (g + 1)]
        mine = sel.kept[0][(sel.kept[0] // GROUP) == g] - GROUP * g
        assert torch.equal(mine, ops.keep_indices(s[None], sel.group_kept[0][g])[0])

    clip = selection(model, proc, inputs, energy=0.8, video_budget="clip")
    assert torch.equal(clip.kept[0], ops.keep_indices(clip.scores[:, : 3 * GROUP], clip_k)[0])  # today's pool

    frame = selection(model, proc, inputs, energy=0.8, video_budget="frame")
    want = [int(ops.energy_budget(feats[GROUP * g: GROUP * (g + 1)][None], 0.8)[0]) for g in range(3)]
    assert frame.group_kept == [want]


@torch.no_grad()
def test_images_are_unaffected(qwen):
    model, proc = qwen
    inputs = proc(images=frames(2, seed=1), text=[T.qwen_prompt("q ?", n_images=2)])
    a = selection(model, proc, inputs, energy=0.8)
    for mode in ("clip", "frame"):
        b = selection(model, proc, inputs, energy=0.8, video_budget=mode)
        assert all(torch.equal(x, y) for x, y in zip(a.kept, b.kept))


@pytest.mark.parametrize("mode", ["clip-split", "frame"])
@torch.no_grad()
def test_batched_clips_of_different_lengths_equal_one_by_one(qwen, mode):
    model, proc = qwen
    videos = [frames(4, seed=7), frames(6, seed=2)]  # 2 and 3 groups
    texts = ["what moves ?", "how many frames ?"]
    batch = video_inputs(proc, videos, texts)
    singles = [video_inputs(proc, [v], [t]) for v, t in zip(videos, texts)]
    prune_(model, PruneConfig(scorer="atp", energy=0.8, video_budget=mode, text_encoder=None), processor=proc)
    try:
        assert_batched_equals_one_by_one(model, batch, singles, max_new_tokens=4)
        model(**batch)
        split = visprune.last_selection(model).group_kept
        alone = []
        for one in singles:
            model(**one)
            alone += visprune.last_selection(model).group_kept
    finally:
        unprune_(model)
    assert split == alone and [len(g) for g in split] == [2, 3]


@torch.no_grad()
def test_composes_with_the_temporal_stage(qwen):
    """Repeats are not candidates: a clip still for 4 frames then moving keeps nothing of its repeated
    group, the clip budget is read from the survivors and split among the groups that have some."""
    model, proc = qwen
    clip = frames(1, seed=3) * 4 + frames(2, seed=5)
    sel = selection(model, proc, video_inputs(proc, [clip]), energy=0.8, temporal=0.99)
    assert sel.temporal_dropped == [GROUP]
    survivors = sel.encoded.features[0][~sel.repeats[0][: 3 * GROUP]]
    clip_k = int(ops.energy_budget(survivors[None], 0.8)[0])
    feats = sel.encoded.features[0]
    energies = [group_energy(feats[GROUP * g: GROUP * (g + 1)]) for g in (0, 2)]
    parts = ops.apportion(clip_k, energies, [GROUP, GROUP])
    assert sel.group_kept == [[parts[0], 0, parts[1]]] and sum(parts) == clip_k
    assert not sel.repeats[0][sel.kept[0]].any()


def test_video_budget_is_validated_and_round_trips():
    assert PruneConfig(energy=0.9).video_budget == "clip-split"
    assert PruneConfig(keep=0.5).video_budget is None
    cfg = PruneConfig(energy=0.9, video_budget="frame")
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown video_budget"):
        PruneConfig(energy=0.9, video_budget="frames")
    with pytest.raises(ValueError, match="does nothing with budget='ratio'"):
        PruneConfig(keep=0.5, video_budget="clip")


OWN_SELECTION = {"divprune": "divprune", "cdpruner": "cdpruner", "vispruner": "vispruner",
                 "visionzip-projected": VisionZipScorer(space="projected"), "pool": "pool"}


def divprune_reference(x: torch.Tensor, k: int) -> list[int]:
    """DivPrune's Algorithm 1 written out on one set of tokens: the token farthest from its nearest
    neighbour first, then each time the token whose nearest chosen token is farthest (lower index on ties)."""
    f = torch.nn.functional.normalize(x.float(), dim=-1)
    d = 1.0 - f @ f.T
    d.fill_diagonal_(float("inf"))
    chosen = [int(d.amin(-1).argmax())]
    d.fill_diagonal_(0.0)
    while len(chosen) < k:
        near = d[:, chosen].amin(-1)
        near[chosen] = -1.0
        chosen.append(int(near.argmax()))
    return sorted(chosen)


@pytest.mark.parametrize("mode", ["clip-split", "frame"])
@pytest.mark.parametrize("name", list(OWN_SELECTION))
@torch.no_grad()
def test_scorers_with_their_own_selection_honour_each_groups_part(qwen, name, mode):
    """DivPrune, CDPruner, VisPruner, VisionZip (projected) and pooling choose each temporal group's part
    of the clip's budget among that group's tokens, as top-k scorers do (same parts: they depend on the
    features only); DivPrune's picks in a group are Algorithm 1 on the group's tokens alone."""
    model, proc = qwen
    inputs = video_inputs(proc, [frames(6, seed=2)])
    cfg = dict(energy=0.8, video_budget=mode, text_encoder=None)
    parts = pruned_selection(model, proc, inputs, PruneConfig(scorer="random", **cfg)).group_kept[0]
    sel = pruned_selection(model, proc, inputs, PruneConfig(scorer=OWN_SELECTION[name], **cfg))
    if name == "pool":  # the largest pooled grid within each part
        from visprune.scoring.scorers.pool import pool_shape
        parts = [math.prod(pool_shape(6, 4, p)) if p else 0 for p in parts]
    assert sel.group_kept == [parts] and (len(set(parts)) > 1 or mode == "frame")
    if name == "divprune":
        feats = sel.encoded.features[0]
        for g, share in enumerate(parts):
            mine = sel.kept[0][(sel.kept[0] // GROUP) == g] - GROUP * g
            assert mine.tolist() == divprune_reference(feats[GROUP * g: GROUP * (g + 1)], share)


@pytest.mark.parametrize("name", list(OWN_SELECTION))
@torch.no_grad()
def test_own_selection_split_batched_equals_one_by_one(qwen, name):
    model, proc = qwen
    pics, vids = frames(1, seed=3), [frames(4, seed=7), frames(6, seed=2)]
    texts = [T.qwen_prompt("what changed ?", n_images=1, n_videos=1), T.qwen_prompt("how many ?", n_images=0, n_videos=1)]
    batch = proc(images=pics, videos=vids, text=texts)
    singles = [proc(images=pics, videos=vids[:1], text=texts[:1]), proc(videos=vids[1:], text=texts[1:])]
    cfg = PruneConfig(scorer=OWN_SELECTION[name], energy=0.8, text_encoder=None)
    together = pruned_selection(model, proc, batch, cfg)
    alone = [pruned_selection(model, proc, one, cfg) for one in singles]
    assert together.group_kept == alone[0].group_kept + alone[1].group_kept
    assert all(torch.equal(a, b) for a, b in zip(alone[0].kept + alone[1].kept, together.kept))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(alone[0].kept_features + alone[1].kept_features,
                                                                together.kept_features))
