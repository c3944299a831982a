"""Videos on LLaVA-OneVision and LLaVA-NeXT-Video: each video pruned within itself (one entry, one budget),
the newline OneVision appends per video protected, signals pooled per frame as the model pools features,
mixed with images."""

import pytest
import torch

import visprune
from helpers import assert_keep_all_equals_stock, assert_batched_equals_one_by_one, pruned_selection, recording
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T
from visprune.errors import UsageError


def video_inputs(model, proc, clips, images=(), question="what colour is the star ?"):
    """One prompt per clip (``images``: one image per prompt before its video), padded on the left."""
    n = [T.onevision_video_tokens(model, len(c)) for c in clips]
    texts = []
    for i, k in enumerate(n):
        head = "USER: " + ("<image>\n" if images else "")
        texts.append(head + "<video>" * k + "\n" + question + " ASSISTANT:")
    if images:
        inputs = proc(images=list(images), text=texts, return_tensors="pt", padding=True)
    else:
        inputs = dict(proc.tokenizer(texts, return_tensors="pt", padding=True))
    inputs["pixel_values_videos"] = T.onevision_video(clips)
    return inputs


KINDS = {"llava_onevision": T.llava_onevision, "llava_next_video": T.llava_next_video}


def newline(model) -> int:
    """Tokens after a video's frame grid: OneVision's newline."""
    return int(model.config.model_type == "llava_onevision")


@pytest.fixture(scope="module", params=list(KINDS))
def built(request):
    model, proc = KINDS[request.param]()
    video = video_inputs(model, proc, [T.images(3, seed=0)])
    mixed = video_inputs(model, proc, [T.images(3, seed=2)], images=T.images(1, size=(T.IMAGE, 2 * T.IMAGE), seed=1))
    return model, proc, video, mixed


@torch.no_grad()
def test_keep_all_equals_stock_on_video_and_mixed_prompts(built):
    model, proc, video, mixed = built
    for inputs in (video, mixed):
        for kept in assert_keep_all_equals_stock(model, proc, inputs, ("cls", "random", "divprune")).values():
            assert len(kept) == ("pixel_values" in inputs) + 1  # the image, then the video
            assert len(kept[-1]) == T.onevision_video_tokens(model, 3)


@torch.no_grad()
def test_unprune_is_exact_after_pruned_video_calls(built):
    model, proc, _, mixed = built
    ref = model(**mixed).logits
    prune_(model, PruneConfig(scorer="cls", keep=0.25), processor=proc)
    try:
        assert model(**mixed).logits.shape[1] < ref.shape[1]
    finally:
        unprune_(model)
    assert torch.equal(model(**mixed).logits, ref)


@torch.no_grad()
def test_language_model_receives_the_kept_video_features_and_the_newline(built):
    model, proc, _, mixed = built
    feats = model.model.get_video_features(
        mixed["pixel_values_videos"], vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy).pooler_output[0]
    seen = {}
    hooks = [recording(seen, "embeds", model.model.language_model, "inputs_embeds"),
             recording(seen, "ids", model.model, "input_ids")]
    sel = pruned_selection(model, proc, mixed, PruneConfig(scorer="cls", keep=0.25), hooks=hooks)
    video_idx = sel.kept[-1]
    n = T.onevision_video_tokens(model, 3)
    if newline(model):
        assert int(video_idx[-1]) == n - 1  # the newline survives
    assert len(video_idx) < n // 2
    embeds, ids = seen["embeds"][0], seen["ids"][0]
    got = embeds[ids == model.config.video_token_id]  # the pruned prompt's video placeholders, in order
    assert len(got) == len(video_idx)
    assert torch.allclose(got, feats[video_idx].to(got.dtype), atol=1e-6)


@torch.no_grad()
def test_batched_clips_equal_one_by_one(built):
    model, proc, _, _ = built
    clips = [T.images(4, seed=5), [T.images(1, seed=6)[0]] * 4]  # a busy clip and a still one: energy differs
    singles = [video_inputs(model, proc, [c]) for c in clips]
    batch = video_inputs(model, proc, clips)
    for cfg in (PruneConfig(scorer="cls", keep=0.25), PruneConfig(scorer="cls", budget="energy", energy=0.9)):
        prune_(model, cfg, processor=proc)
        try:
            for beams in (1, 2):  # beams: OneVision's videos reach the model as one run, expanded per row
                assert_batched_equals_one_by_one(model, batch, singles, max_new_tokens=3, num_beams=beams,
                                                 ragged=cfg.budget == "energy")
        finally:
            unprune_(model)


@torch.no_grad()
def test_saliency_is_tower_attention_received_pooled_per_frame(built):
    model, proc, video, _ = built
    tower = model.model.vision_tower
    pixels = video["pixel_values_videos"]
    frames = pixels.shape[1]
    tower.config._attn_implementation = "eager"
    try:
        out = tower(pixels.flatten(0, 1), output_attentions=True)
    finally:
        tower.config._attn_implementation = model.config.vision_config._attn_implementation
    attn = out.attentions[model.config.vision_feature_layer].mean(1)  # the feature layer's, heads averaged
    if newline(model):  # SigLIP, no [CLS]: attention received, mean over queries; pooled as apply_pooling
        ref = model.model.apply_pooling(attn.mean(1)[..., None])[..., 0].reshape(-1)
    else:  # CLIP: the [CLS] row to the patches, average-pooled 2x2 as the vision_resampler pools
        side = int(attn.shape[-1] ** 0.5)
        cls = attn[:, 0, 1:].reshape(frames, 1, side, side)
        ref = torch.nn.functional.avg_pool2d(cls, 2).reshape(-1)
    sel = pruned_selection(model, proc, video, PruneConfig(scorer="cls", keep=0.5))
    got = sel.encoded.saliency[-1]
    grid = frames * 4
    assert got.shape[0] == grid + newline(model) and torch.isnan(got[grid:]).all()
    assert torch.allclose(got[:grid].float(), ref.float(), atol=1e-6)
    assert sel.encoded.protected[-1][grid:].all() and not sel.encoded.protected[-1][:grid].any()
    assert sel.encoded.thw[-1] == (frames, 2, 2)


@torch.no_grad()
def test_temporal_on_a_still_clip_keeps_about_one_frame(built):
    model, proc, _, _ = built
    still = video_inputs(model, proc, [[T.images(1, seed=3)[0]] * 6])
    prune_(model, PruneConfig(scorer="cls", keep=1.0, temporal=0.99), processor=proc)
    try:
        model(**still)
        kept = visprune.last_kept(model)[0]
    finally:
        unprune_(model)
    assert len(kept) == 4 + newline(model)  # one frame's 2x2 pooled tokens (and the newline)


CONTRACT = {"fixed": {"k": 5}, "ratio": {"keep": 0.3}, "energy": {"energy": 0.8, "min_keep": 2}, "iqr": {"min_keep": 2}}


@pytest.mark.parametrize("budget", visprune.list_budgets())
@pytest.mark.parametrize("scorer", visprune.list_scorers())
@torch.no_grad()
def test_every_pre_llm_scorer_and_budget_prunes_the_video_on_its_own(built, scorer, budget):
    model, proc, _, mixed = built
    if scorer == "text":
        pytest.skip("no CLIP text encoder shares the tiny tower's space")
    cfg = PruneConfig(scorer=scorer, budget=budget, text_encoder=None, llm_layer=1, **CONTRACT[budget])
    try:
        prune_(model, cfg, processor=proc)
    except TypeError:  # refused on LLaVA-OneVision at prune_ time, images or not
        assert not visprune.is_pruned(model)
        return
    try:
        if scorer == "pool":  # packed any-resolution images are refused; the video alone is pooled
            with pytest.raises(UsageError, match="pools only videos"):
                model(**mixed)
            mixed = video_inputs(model, proc, [T.images(3, seed=2)])
        out = model(**mixed)
        sel = visprune.last_selection(model)
    finally:
        unprune_(model)
    assert torch.isfinite(out.logits).all()
    assert sel.modalities == ["image", "video"][-len(sel.kept):]
    n = T.onevision_video_tokens(model, 3)
    kept = sel.kept[-1]
    assert 1 <= len(kept) <= n, (scorer, budget, kept)
    if newline(model):
        assert int(kept[-1]) == n - 1  # the newline always kept
    assert torch.equal(kept, kept.unique())


def test_malformed_videos_are_refused(built):
    model, proc, video, _ = built
    bad = dict(video, pixel_values_videos=video["pixel_values_videos"][0])  # 4-D
    prune_(model, PruneConfig(scorer="cls", keep=0.5), processor=proc)
    try:
        with pytest.raises(UsageError, match="pixel_values_videos"):
            model(**bad)
    finally:
        unprune_(model)
