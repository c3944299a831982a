"""Qwen2-VL and Qwen2.5-VL: 3-D positions kept, saliency without [CLS], batching, exact undo."""

import pytest
import torch
from transformers import AttentionInterface
from transformers.models.qwen2_vl.modeling_qwen2_vl import eager_attention_forward

import visprune
from helpers import pruned_selection, pruned_generate_positions
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T
from visprune.scoring.scorers.pool import pool_shape

KINDS = {"qwen2_vl": T.qwen2_vl, "qwen2_5_vl": T.qwen2_5_vl, "qwen3_vl": T.qwen3_vl, "qwen3_5": T.qwen3_5}
QUESTIONS = ["what colour is the star ?", "how many circle ?"]
SIZE = (112, 168)


@pytest.fixture(scope="module", params=list(KINDS))
def built(request):
    model, proc = KINDS[request.param]()
    imgs = T.images(2, size=SIZE)
    inputs = proc(images=imgs, text=[T.qwen_prompt(q) for q in QUESTIONS])
    return model, proc, inputs, imgs




@torch.no_grad()
def test_kept_tokens_keep_their_original_3d_positions(built):
    model, proc, inputs, _ = built
    full, _ = model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"], attention_mask=inputs["attention_mask"],
    )
    seen, kept = pruned_generate_positions(model, proc, inputs, PruneConfig(scorer="cls", keep=0.25))
    image_id = model.config.image_token_id
    prefill, first_decode = seen[0], seen[1]
    assert prefill.shape[0] == 4  # text positions, then temporal / height / width
    for row in range(2):
        ids, mask = inputs["input_ids"][row], inputs["attention_mask"][row].bool()
        img_cols = (ids == image_id).nonzero().flatten()
        keep_cols = torch.cat([(mask & (ids != image_id)).nonzero().flatten(), img_cols[kept[row]]]).sort().values
        expected = full[:, row, keep_cols]
        got = prefill[1:, row, -len(keep_cols):]
        assert torch.equal(got, expected)
        # the first new token continues right after the prompt's largest position, as unpruned
        assert (first_decode[1:, row, -1] == full[:, row].amax() + 1).all()




_RECORDS = []


def _recording(module, query, key, value, attention_mask, **kwargs):
    out, weights = eager_attention_forward(module, query, key, value, attention_mask, **kwargs)
    _RECORDS.append((module, weights))
    return out, weights


AttentionInterface.register("visprune_recording", _recording)


@pytest.mark.parametrize("kind, block", [("qwen2_vl", 2), ("qwen2_5_vl", 1), ("qwen3_vl", 2), ("qwen3_5", 2)])
@torch.no_grad()
def test_saliency_equals_recorded_attention(kind, block):
    model, proc = KINDS[kind]()
    inputs = proc(images=T.images(1, size=SIZE), text=[T.qwen_prompt("is there a star ?")])
    prune_(model, PruneConfig(scorer="cls", keep=0.5), processor=proc)
    try:
        model(**inputs)
        sal = visprune.last_selection(model).encoded.saliency[0]
    finally:
        unprune_(model)
    vis = model.model.visual
    rec = type(vis)._from_config(vis.config, attn_implementation="visprune_recording").eval()
    rec.load_state_dict(vis.state_dict())
    _RECORDS.clear()
    rec(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    weights = [w for m, w in _RECORDS if m is rec.blocks[block].attn]
    assert len(weights) == 1  # one image, one full-attention chunk
    per_patch = weights[0][0].mean(dim=(0, 1))  # heads and queries: attention each patch receives
    per_token = per_patch.reshape(-1, 4).mean(1)
    if kind == "qwen2_5_vl":
        from transformers.vision_utils import get_vision_window_index

        window, _ = get_vision_window_index(inputs["image_grid_thw"], 2, vis.window_size, vis.patch_size)
        per_token = per_token[torch.argsort(window)]
    assert torch.allclose(sal, per_token, atol=1e-6)


def test_clip_text_scorer_is_refused_with_advice(tmp_path):
    model, proc = T.qwen2_vl()
    clip_vision = T._clip_vision()
    clip = T.clip_model(clip_vision)
    clip.save_pretrained(tmp_path)
    T.tokenizer().save_pretrained(tmp_path)
    with pytest.raises((TypeError, ValueError), match="lmtext"):
        prune_(model, PruneConfig(scorer="text", text_encoder=str(tmp_path)), processor=proc)
    assert not visprune.is_pruned(model)


@torch.no_grad()
def test_pool_uses_the_merged_grid():
    model, proc = T.qwen2_vl()
    inputs = proc(images=T.images(1, size=SIZE), text=[T.qwen_prompt("is there a star ?")])
    prune_(model, PruneConfig(scorer="pool", k=6), processor=proc)
    try:
        model(**inputs)
        sel = visprune.last_selection(model)
    finally:
        unprune_(model)
    rows, cols = (int(x) // 2 for x in inputs["image_grid_thw"][0, 1:])
    assert sel.encoded.grids == [(rows, cols)] and len(sel.kept[0]) == 6
    grid = sel.encoded.features[0].T.reshape(1, -1, rows, cols)
    assert pool_shape(rows, cols, 6) == (3, 2)  # 6 x 4 merged grid: keep its aspect
    ref = torch.nn.functional.adaptive_avg_pool2d(grid, (3, 2)).flatten(2)[0].T
    assert torch.allclose(sel.kept_features[0], ref, atol=1e-6)


@pytest.mark.parametrize("kind", list(KINDS))
@torch.no_grad()
def test_several_images_per_prompt(kind):
    model, proc = KINDS[kind]()
    imgs = T.images(3, size=SIZE)
    texts = [T.qwen_prompt("is there a star ?", n_images=2), T.qwen_prompt("how many circle ?", n_images=1)]
    inputs = proc(images=imgs, text=texts)
    gref = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    prune_(model, PruneConfig(scorer="atp", keep=1.0), processor=proc)
    try:
        assert torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False), gref)
    finally:
        unprune_(model)
    prune_(model, PruneConfig(scorer="atp", energy=0.8), processor=proc)
    try:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        sel = visprune.last_selection(model)
        assert len(sel.kept) == 3 and sel.image_rows == [0, 0, 1]
        # the two-image prompt alone gives the same selection and the same answer
        one = proc(images=imgs[:2], text=texts[:1])
        single = model.generate(**one, max_new_tokens=4, do_sample=False)
        kept_one = visprune.last_kept(model)
        assert all(torch.equal(a, b) for a, b in zip(kept_one, sel.kept[:2]))
        new = single[0, one["input_ids"].shape[1]:]
        assert torch.equal(new, out[0, inputs["input_ids"].shape[1]:][: len(new)])
    finally:
        unprune_(model)


@pytest.mark.parametrize("build", [T.qwen3_vl, T.qwen3_vl_moe])
@torch.no_grad()
def test_qwen3_vl_deepstack_features_follow_the_kept_tokens(build):
    """Each DeepStack layer adds feature j to token j: pruned, the language model gets each layer's
    features at exactly the kept indices, at exactly the kept visual positions."""
    model, proc = build()
    inputs = proc(images=T.images(2, size=SIZE), text=[T.qwen_prompt(q) for q in QUESTIONS])
    full = model.model.get_image_features(pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
                                          return_dict=True).deepstack_features
    seen = {}

    def grab(_m, _a, kw):
        seen.setdefault("deep", kw["deepstack_visual_embeds"])
        seen.setdefault("mask", kw["visual_pos_masks"])

    hook = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    sel = pruned_selection(model, proc, inputs, PruneConfig(scorer="cls", keep=0.25), hooks=[hook])
    assert len(seen["deep"]) == len(full) == 2  # deepstack_visual_indexes [0, 1]
    for layer, got in zip(full, seen["deep"]):
        want = torch.cat([f[k] for f, k in zip(layer, sel.kept)])
        assert torch.equal(got, want)
    assert int(seen["mask"].sum()) == sum(len(k) for k in sel.kept)
