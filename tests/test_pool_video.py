"""``pool`` on videos: each temporal group (a frame pair after Qwen's merger, a frame on LLaVA-OneVision /
NeXT-Video) pooled on its own grid to its share of the video's budget, never across groups."""

import pytest
import torch
import torch.nn.functional as F

import visprune
from helpers import assert_batched_equals_one_by_one, pruned_selection, recording
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T
from visprune.errors import UsageError
from visprune.scoring.scorers.pool import pool_shape

from test_prune_video_llava import KINDS as LLAVA_KINDS, newline, video_inputs

SIZE = (112, 168)  # Qwen2-VL: a 6 x 4 merged grid per frame pair


def frames(n, seed=0):
    return T.images(n, size=SIZE, seed=seed)


def pooled(grid_tokens, rows, cols, k):
    """``[rows * cols, D]`` tokens adaptive-average-pooled to the grid ``pool`` picks for ``k``, row-major."""
    r, c = pool_shape(rows, cols, k)
    grid = grid_tokens.reshape(rows, cols, -1).permute(2, 0, 1)[None]
    return F.adaptive_avg_pool2d(grid, (r, c))[0].flatten(1).T


@pytest.fixture(scope="module")
def qwen():
    model, proc = T.qwen2_vl()
    mixed = proc(images=frames(1, seed=1), videos=[frames(6)], text=[T.qwen_prompt("what moves ?", n_images=1, n_videos=1)])
    return model, proc, mixed


@torch.no_grad()
def test_qwen_video_pooled_within_each_frame_pair(qwen):
    """k=12 over three frame pairs: 4 each, every pair's 6 x 4 grid pooled to 2 x 2 on its own; the
    language model receives exactly those means at the video placeholders (and the image pooled as before)."""
    model, proc, mixed = qwen
    image = model.model.get_image_features(mixed["pixel_values"], mixed["image_grid_thw"]).pooler_output[0]
    video = model.model.get_video_features(mixed["pixel_values_videos"], mixed["video_grid_thw"]).pooler_output[0]
    seen = {}
    hooks = [recording(seen, "embeds", model.model.language_model, "inputs_embeds"),
             recording(seen, "ids", model.model, "input_ids")]
    sel = pruned_selection(model, proc, mixed, PruneConfig(scorer="pool", k=12), hooks=hooks)
    assert sel.encoded.thw[1] == (3, 6, 4) and sel.group_kept == [[4, 4, 4]]
    want = torch.cat([pooled(video[g * 24:(g + 1) * 24], 6, 4, 4) for g in range(3)])
    ids, embeds = seen["ids"][0], seen["embeds"][0]
    assert torch.allclose(embeds[ids == model.config.video_token_id], want, atol=1e-6)
    assert torch.allclose(embeds[ids == model.config.image_token_id], pooled(image, 6, 4, 12), atol=1e-6)


@pytest.mark.parametrize("mode", ["clip-split", "frame"])
@torch.no_grad()
def test_qwen_video_pool_takes_the_energy_budgets_split(qwen, mode):
    """With the energy budget's split (``Budget.parts``), each frame pair is pooled to its own part: the
    parts are what a top-k scorer keeps per group under the same budget."""
    model, proc, mixed = qwen
    cfg = dict(budget="energy", energy=0.8, video_budget=mode)
    parts = pruned_selection(model, proc, mixed, PruneConfig(scorer="random", **cfg)).group_kept[0]
    got = pruned_selection(model, proc, mixed, PruneConfig(scorer="pool", **cfg)).group_kept[0]
    assert len(set(parts)) > 1 or mode == "frame"
    assert got == [(lambda r, c: r * c)(*pool_shape(6, 4, p)) if p else 0 for p in parts]


@pytest.mark.parametrize("beams", [1, 2])
@torch.no_grad()
def test_qwen_pool_batched_equals_one_by_one(qwen, beams):
    """Two clips of 2 and 3 frame pairs, ragged energy budgets (mixed image + video batches: the
    every-scorer contract of tests/test_prune_video.py)."""
    model, proc, _ = qwen
    vids = [frames(4), frames(6, seed=2)]
    texts = [T.qwen_prompt(q, n_images=0, n_videos=1) for q in ("what changed ?", "how many ?")]
    batch = proc(videos=vids, text=texts)
    singles = [proc(videos=[v], text=[t]) for v, t in zip(vids, texts)]
    prune_(model, PruneConfig(scorer="pool", budget="energy", energy=0.8), processor=proc)
    try:
        assert_batched_equals_one_by_one(model, batch, singles, max_new_tokens=4, num_beams=beams)
    finally:
        unprune_(model)


@pytest.mark.parametrize("kind", list(LLAVA_KINDS))
@torch.no_grad()
def test_llava_video_pooled_within_each_frame_and_images_refused(kind):
    """LLaVA-OneVision / NeXT-Video: each frame's 2 x 2 pooled grid pooled to its share (keep 0.5: 2 of 4),
    OneVision's newline kept; a call with (packed, any-resolution) images is refused before the model runs."""
    model, proc = LLAVA_KINDS[kind]()
    video = video_inputs(model, proc, [T.images(3, seed=0)])
    feats = model.model.get_video_features(
        video["pixel_values_videos"], vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy).pooler_output[0]
    seen = {}
    hooks = [recording(seen, "embeds", model.model.language_model, "inputs_embeds"),
             recording(seen, "ids", model.model, "input_ids")]
    sel = pruned_selection(model, proc, video, PruneConfig(scorer="pool", keep=0.5), hooks=hooks)
    assert sel.group_kept == [[2, 2, 2]]
    want = torch.cat([pooled(feats[4 * f:4 * f + 4], 2, 2, 2) for f in range(3)] + [feats[12:]])  # (newline)
    got = seen["embeds"][0][seen["ids"][0] == model.config.video_token_id]
    assert len(got) == 6 + newline(model) and torch.allclose(got, want, atol=1e-6)

    mixed = video_inputs(model, proc, [T.images(3, seed=2)], images=T.images(1, size=(T.IMAGE, 2 * T.IMAGE), seed=1))
    ran = []
    hook = model.model.vision_tower.register_forward_pre_hook(lambda *_: ran.append(True))
    prune_(model, PruneConfig(scorer="pool", keep=0.5), processor=proc)
    try:
        with pytest.raises(UsageError, match="pools only videos"):
            model(**mixed)
    finally:
        unprune_(model)
        hook.remove()
    assert not ran


def test_pool_with_the_temporal_stage_is_refused(qwen):
    model, proc, _ = qwen
    with pytest.raises(TypeError, match="leave temporal=None"):
        prune_(model, PruneConfig(scorer="pool", keep=0.5, temporal=0.9), processor=proc)
    assert not visprune.is_pruned(model)
