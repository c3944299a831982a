"""Videos on the Qwen-VL family: each video pruned within itself (one entry, one budget), mixed with
images, kept tokens at their original 3-D positions, DeepStack gathered, saliency, bad input."""

import pytest
import torch
from transformers import AttentionInterface
from transformers.models.qwen2_vl.modeling_qwen2_vl import eager_attention_forward

import visprune
from helpers import assert_keep_all_equals_stock, assert_batched_equals_one_by_one, pruned_selection, recording
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T
from visprune.errors import UsageError

KINDS = {"qwen2_vl": T.qwen2_vl, "qwen2_5_vl": T.qwen2_5_vl, "qwen3_vl": T.qwen3_vl, "qwen3_5": T.qwen3_5}
SIZE = (112, 168)  # 12 x 8 patches: 24 merged tokens per frame pair


def frames(n: int, seed: int = 0):
    return T.images(n, size=SIZE, seed=seed)


@pytest.fixture(scope="module", params=list(KINDS))
def built(request):
    model, proc = KINDS[request.param]()
    video = proc(videos=[frames(3)], text=[T.qwen_prompt("what moves ?", n_images=0, n_videos=1)])
    pics = frames(4, seed=1)
    mixed = proc(images=pics[:1], videos=[pics[1:4], frames(6)],  # one image, then two videos (3 and 6 frames)
                 text=[T.qwen_prompt("what changed ?", n_images=1, n_videos=2)])
    return request.param, model, proc, video, mixed


@torch.no_grad()
def test_keep_all_equals_stock_on_video_and_mixed_prompts(built):
    _, model, proc, video, mixed = built
    for inputs in (video, mixed):
        n_entries = len(inputs.get("image_grid_thw", [])) + len(inputs["video_grid_thw"])
        for kept in assert_keep_all_equals_stock(model, proc, inputs, ("atp", "cls", "random")).values():
            assert len(kept) == n_entries  # one per image, then one per video


@torch.no_grad()
def test_unprune_is_exact_after_pruned_video_calls(built):
    _, model, proc, _, mixed = built
    ref = model(**mixed).logits
    prune_(model, PruneConfig(scorer="atp", keep=0.25), processor=proc)
    try:
        pruned = model(**mixed).logits
        assert pruned.shape[1] < ref.shape[1]
    finally:
        unprune_(model)
    assert torch.equal(model(**mixed).logits, ref)


@torch.no_grad()
def test_batch_of_videos_with_different_frame_counts_equals_each_alone(built):
    _, model, proc, _, _ = built
    videos = [frames(3), frames(6, seed=2)]  # 2 and 3 temporal patches: 48 and 72 tokens
    texts = [T.qwen_prompt(q, n_images=0, n_videos=1) for q in ("what moves ?", "how many frames ?")]
    batch = proc(videos=videos, text=texts)
    singles = [proc(videos=[v], text=[t]) for v, t in zip(videos, texts)]
    prune_(model, PruneConfig(scorer="atp", keep=0.25), processor=proc)
    try:
        kept = assert_batched_equals_one_by_one(model, batch, singles, max_new_tokens=4)
    finally:
        unprune_(model)
    assert [len(k) for k in kept] == [12, 18]


def _columns(ids, token_id, kept):
    return (ids == token_id).nonzero().flatten()[kept]


@torch.no_grad()
def test_language_model_gets_exactly_the_kept_tokens_at_their_3d_positions(built):
    """Mixed prompt: the image's kept tokens at the image placeholders, each video's at the video
    placeholders (the model scatters each kind on its own), every kept token at the 3-D position it
    had unpruned; last_kept lists the image, then the videos."""
    _, model, proc, _, mixed = built
    full, _ = model.model.get_rope_index(
        mixed["input_ids"], mm_token_type_ids=mixed["mm_token_type_ids"], image_grid_thw=mixed["image_grid_thw"],
        video_grid_thw=mixed["video_grid_thw"], attention_mask=mixed["attention_mask"])
    image = model.model.get_image_features(mixed["pixel_values"], mixed["image_grid_thw"]).pooler_output
    videos = model.model.get_video_features(mixed["pixel_values_videos"], mixed["video_grid_thw"]).pooler_output
    seen = {}
    lm = model.model.language_model
    hooks = [recording(seen, "pos", lm, "position_ids"), recording(seen, "embeds", lm, "inputs_embeds")]
    sel = pruned_selection(model, proc, mixed, PruneConfig(scorer="atp", keep=0.25), hooks=hooks)
    assert sel.modalities == ["image", "video", "video"] and sel.image_rows == [0, 0, 0]
    assert [len(k) for k in sel.kept] == [6, 12, 18]
    ids = mixed["input_ids"][0]
    cfg = model.config
    img_cols = _columns(ids, cfg.image_token_id, sel.kept[0])
    vid_cols = _columns(ids, cfg.video_token_id, torch.cat([sel.kept[1], sel.kept[2] + len(videos[0])]))
    text_cols = ((ids != cfg.image_token_id) & (ids != cfg.video_token_id)).nonzero().flatten()
    keep_cols = torch.cat([text_cols, img_cols, vid_cols]).sort().values
    assert torch.equal(seen["pos"][1:, 0], full[:, 0, keep_cols])
    embeds = seen["embeds"][0]
    at = {int(c): i for i, c in enumerate(keep_cols)}
    assert torch.equal(embeds[[at[int(c)] for c in img_cols]], image[0][sel.kept[0]])
    want = torch.cat([videos[0][sel.kept[1]], videos[1][sel.kept[2]]])
    assert torch.equal(embeds[[at[int(c)] for c in vid_cols]], want)
    # the kept video tokens span both temporal patches of the first video, whose positions differ in t
    assert len(set(full[0, 0, vid_cols[: len(sel.kept[1])]].tolist())) > 1


@pytest.mark.parametrize("build", [T.qwen3_vl, T.qwen3_vl_moe])
@torch.no_grad()
def test_qwen3_vl_deepstack_features_of_videos_follow_the_kept_tokens(build):
    model, proc = build()
    pics = frames(4, seed=1)
    inputs = proc(images=pics[:1], videos=[pics[1:4]], text=[T.qwen_prompt("what changed ?", n_images=1, n_videos=1)])
    image = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).deepstack_features
    video = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).deepstack_features
    seen = {}
    lm = model.model.language_model
    hooks = [recording(seen, "deep", lm, "deepstack_visual_embeds"), recording(seen, "mask", lm, "visual_pos_masks")]
    sel = pruned_selection(model, proc, inputs, PruneConfig(scorer="cls", keep=0.25), hooks=hooks)
    assert len(seen["deep"]) == 2
    for img_layer, vid_layer, got in zip(image, video, seen["deep"]):  # the image precedes the video in the prompt
        assert torch.equal(got, torch.cat([img_layer[0][sel.kept[0]], vid_layer[0][sel.kept[1]]]))
    assert int(seen["mask"].sum()) == sum(len(k) for k in sel.kept)


_RECORDS = []


def _recording(module, query, key, value, attention_mask, **kwargs):
    out, weights = eager_attention_forward(module, query, key, value, attention_mask, **kwargs)
    _RECORDS.append((module, weights))
    return out, weights


AttentionInterface.register("visprune_recording_video", _recording)


@pytest.mark.parametrize("kind, block", [("qwen2_vl", 2), ("qwen2_5_vl", 1), ("qwen3_vl", 2)])
@torch.no_grad()
def test_video_saliency_equals_recorded_attention(kind, block):
    """The tower attends within each temporal patch (a frame pair, ``cu_seqlens``): a video token's
    saliency is the attention its patches receive from its own frame pair, heads and queries averaged."""
    model, proc = KINDS[kind]()
    inputs = proc(videos=[frames(4)], text=[T.qwen_prompt("what moves ?", n_images=0, n_videos=1)])
    sal = pruned_selection(model, proc, inputs, PruneConfig(scorer="cls", keep=0.5)).encoded.saliency[0]
    vis = model.model.visual
    rec = type(vis)._from_config(vis.config, attn_implementation="visprune_recording_video").eval()
    rec.load_state_dict(vis.state_dict())
    _RECORDS.clear()
    rec(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"])
    weights = [w for m, w in _RECORDS if m is rec.blocks[block].attn]
    assert len(weights) == 2  # one chunk per temporal patch
    per_patch = torch.cat([w[0].mean(dim=(0, 1)) for w in weights])
    per_token = per_patch.reshape(-1, 4).mean(1)
    if kind == "qwen2_5_vl":
        from transformers.vision_utils import get_vision_window_index

        window, _ = get_vision_window_index(inputs["video_grid_thw"], 2, vis.window_size, vis.patch_size)
        per_token = per_token[torch.argsort(window)]
    assert sal.shape == (48,) and torch.allclose(sal, per_token, atol=1e-6)


def test_two_identical_frames_are_the_image_layout():
    """The test helper's video layout: a still video of two frames patchifies as the image processor
    patchifies one image (which repeats it over ``temporal_patch_size``)."""
    _, proc = T.qwen2_vl()
    pic = frames(1)
    one = proc(images=pic, text=[T.qwen_prompt("q ?")])
    vid = proc(videos=[pic * 2], text=[T.qwen_prompt("q ?", n_images=0, n_videos=1)])
    assert torch.equal(one["pixel_values"], vid["pixel_values_videos"])
    assert torch.equal(one["image_grid_thw"], vid["video_grid_thw"])


class _Ran(Exception):
    pass


def _refused(model, proc, inputs, config=None, match=""):
    """The call raises UsageError(match) before the vision tower or the language model runs."""
    def stop(*_):
        raise _Ran

    modules = [model.model.visual, model.model.language_model] if hasattr(model.model, "visual") else [model.model]
    hooks = [m.register_forward_pre_hook(stop) for m in modules]
    prune_(model, config or PruneConfig(scorer="cls", keep=0.5), processor=proc)
    try:
        with pytest.raises(UsageError, match=match):
            model(**inputs)
    finally:
        unprune_(model)
        for h in hooks:
            h.remove()


def test_bad_video_inputs_are_refused_before_the_model_runs():
    model, proc = T.qwen2_vl()
    inputs = dict(proc(videos=[frames(4)], text=[T.qwen_prompt("q ?", n_images=0, n_videos=1)]))
    _refused(model, proc, {**inputs, "video_grid_thw": torch.tensor([[4, 12, 8]])}, match="gives 384 patches")
    _refused(model, proc, {**inputs, "video_grid_thw": torch.tensor([[0, 12, 8]])}, match="t must be at least 1")
    _refused(model, proc, {**inputs, "video_grid_thw": torch.tensor([[2, 12, 7]])}, match="multiples of the merge")
    raw = inputs["pixel_values_videos"].reshape(-1, 3, 2, 14 * 14)[:, :, 0].reshape(192, -1)  # one frame per patch
    _refused(model, proc, {**inputs, "pixel_values_videos": raw}, match="temporal_patch_size=2")
    _refused(model, proc, {k: v for k, v in inputs.items() if k != "video_grid_thw"}, match="video_grid_thw")


def test_videos_on_a_model_without_video_pruning_are_refused():
    model, proc = T.llava()
    inputs = dict(proc(images=T.images(1), text=["USER: <image>\nq ? ASSISTANT:"], return_tensors="pt"))
    _refused(model, proc, {**inputs, "pixel_values_videos": torch.zeros(1, 2, 3, T.IMAGE, T.IMAGE)},
             match="does not prune video inputs")


@torch.no_grad()
def test_a_video_only_call_is_recorded():
    model, proc = T.qwen2_vl()
    inputs = proc(videos=[frames(4)], text=[T.qwen_prompt("q ?", n_images=0, n_videos=1)])
    prune_(model, PruneConfig(scorer="cls", keep=0.25), processor=proc)
    try:
        model(**inputs)
        kept = visprune.last_kept(model)
        assert visprune.last_selection(model).modalities == ["video"]
    finally:
        unprune_(model)
    assert len(kept) == 1 and len(kept[0]) == 12


@torch.no_grad()
def test_qwen2_5_vl_video_time_scale_is_kept():
    """Qwen2.5-VL spaces a video's temporal positions by ``second_per_grid_ts``: pruned, the kept tokens
    keep those positions (keep-all equals stock with it)."""
    model, proc = T.qwen2_5_vl()
    inputs = dict(proc(videos=[frames(6)], text=[T.qwen_prompt("what moves ?", n_images=0, n_videos=1)]))
    inputs["second_per_grid_ts"] = torch.tensor([4.0])
    ref = model(**inputs).logits
    seen = {}
    hooks = [recording(seen, "pos", model.model.language_model, "position_ids")]
    full, _ = model.model.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                                         video_grid_thw=inputs["video_grid_thw"], second_per_grid_ts=torch.tensor([4.0]),
                                         attention_mask=inputs["attention_mask"])
    assert full[0].amax() > full[1:].amax()  # the time scale reaches the positions
    sel = pruned_selection(model, proc, inputs, PruneConfig(scorer="atp", keep=1.0), hooks=hooks)
    assert torch.equal(seen["pos"][1:], full) and len(sel.kept[0]) == 72
    prune_(model, PruneConfig(scorer="atp", keep=1.0), processor=proc)
    try:
        assert torch.equal(model(**inputs).logits, ref)
    finally:
        unprune_(model)


CONTRACT = {"fixed": {"k": 5}, "ratio": {"keep": 0.3}, "energy": {"energy": 0.8, "min_keep": 2}, "iqr": {"min_keep": 2}}


@pytest.fixture(scope="module")
def contract_setup():
    model, proc = T.qwen2_vl()
    pics = frames(3, seed=3)
    vids = [frames(3), frames(6, seed=2)]
    texts = [T.qwen_prompt("what changed ?", n_images=1, n_videos=1), T.qwen_prompt("how many ?", n_images=0, n_videos=1)]
    batch = proc(images=pics[:1], videos=vids, text=texts)
    singles = [proc(images=pics[:1], videos=vids[:1], text=texts[:1]), proc(videos=vids[1:], text=texts[1:])]
    return model, proc, batch, singles


@pytest.mark.parametrize("budget", visprune.list_budgets())
@pytest.mark.parametrize("scorer", visprune.list_scorers())
@torch.no_grad()
def test_every_pre_llm_scorer_and_budget_prunes_each_video_on_its_own(contract_setup, scorer, budget):
    """Each video is one entry with its own budget, as an image is: counts per entry, and the batch
    (an image and a video in one row, a longer video in the other) selects as its rows alone."""
    model, proc, batch, singles = contract_setup
    if scorer == "text":
        pytest.skip("no CLIP text encoder shares Qwen's tower space")
    cfg = PruneConfig(scorer=scorer, budget=budget, text_encoder=None, llm_layer=1, **CONTRACT[budget])
    try:
        prune_(model, cfg, processor=proc)
    except TypeError:  # refused on Qwen at prune_ time, images or not (tests/test_contract.py)
        assert not visprune.is_pruned(model)
        return
    try:
        model(**batch)
        sel = visprune.last_selection(model)
        assert sel.modalities == ["image", "video", "video"] and sel.image_rows == [0, 0, 1]
        for i, (kept, feats) in enumerate(zip(sel.kept, sel.encoded.features)):
            assert torch.equal(kept, torch.unique(kept)) and 1 <= len(kept) <= feats.shape[0]
            n = sel.sent[i]
            want = {"fixed": 5, "ratio": int(feats.shape[0] * 0.3 + 0.5)}.get(budget)
            if want is not None:  # pooling keeps the largest grids within each share: at most, not exactly
                assert n <= want if scorer == "pool" else n == want
            assert torch.isfinite(sel.kept_features[i]).all()
        one = []
        for inputs in singles:
            model(**inputs)
            one += visprune.last_selection(model).kept
        assert all(torch.equal(a, b) for a, b in zip(one, sel.kept)) and len(one) == 3
    finally:
        unprune_(model)
