"""In-LLM methods (FastV, DART, PyramidDrop) on videos: video placeholders are visual tokens like image
ones, on Qwen2-VL / Qwen2.5-VL (kept tokens at their original 3-D M-RoPE positions), LLaVA-OneVision and
LLaVA-NeXT-Video; mixed image + video prompts, ragged per-sample budgets, beam search."""

import pytest
import torch

import visprune
from helpers import assert_batched_equals_one_by_one
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T

from test_prune_video_llava import KINDS as LLAVA_KINDS, video_inputs

SIZE = (112, 168)
IN_LLM = ("fastv", "dart", "pdrop")
QWEN = {"qwen2_vl": T.qwen2_vl, "qwen2_5_vl": T.qwen2_5_vl}


def frames(n, seed=0):
    return T.images(n, size=SIZE, seed=seed)


def qwen_mixed(proc):
    """One prompt: an image, then two videos (2 and 3 frame pairs)."""
    pics = frames(4, seed=1)
    return proc(images=pics[:1], videos=[pics[1:4], frames(6)], text=[T.qwen_prompt("what changed ?", n_images=1,
                                                                                   n_videos=2)])


def llava_mixed(model, proc):
    return video_inputs(model, proc, [T.images(3, seed=2)], images=T.images(1, size=(T.IMAGE, 2 * T.IMAGE), seed=1))


@pytest.fixture(scope="module", params=[*QWEN, *LLAVA_KINDS])
def built(request):
    name = request.param
    if name in QWEN:
        model, proc = QWEN[name]()
        return name, model, proc, qwen_mixed(proc)
    model, proc = LLAVA_KINDS[name]()
    return name, model, proc, llava_mixed(model, proc)


@torch.no_grad()
def test_keep_all_equals_stock_on_mixed_prompts(built):
    _, model, proc, mixed = built
    ref = model(**mixed).logits
    gref = model.generate(**mixed, max_new_tokens=4, do_sample=False)
    for scorer in IN_LLM:
        prune_(model, PruneConfig(scorer=scorer, keep=1.0, llm_layer=1), processor=proc)
        try:
            assert (model(**mixed).logits - ref).abs().max().item() <= 1e-5, scorer
            assert torch.equal(model.generate(**mixed, max_new_tokens=4, do_sample=False), gref), scorer
            assert visprune.last_selection(model).modalities == ["image"] + ["video"] * (len(visprune.last_kept(model)) - 1)
        finally:
            unprune_(model)


def _kept_columns(model, ids, sel):
    """Prompt columns the layers after the cut keep: text, and each kind's placeholders at its kept tokens."""
    keep = torch.ones_like(ids, dtype=torch.bool)
    tokens = {"image": model.config.image_token_id, "video": model.config.video_token_id}
    for kind, token_id in tokens.items():
        cols = (ids == token_id).nonzero().flatten()
        flags = torch.zeros(len(cols), dtype=torch.bool)
        start = 0
        for i in (i for i, k in enumerate(sel.modalities) if k == kind):  # each kind fills its own placeholders
            flags[start + sel.kept[i]] = True
            start += sel.encoded.features[i].shape[0]
        keep[cols] = flags
    return keep.nonzero().flatten()


@pytest.mark.parametrize("scorer", IN_LLM)
@torch.no_grad()
def test_layers_after_the_cut_see_exactly_the_kept_tokens_at_their_positions(built, scorer):
    """Below the cut (layer 1) everything runs as stock; layer 1's attention then gets the stock input at
    the kept columns only (text, kept image tokens, kept video tokens) with the stock rotary terms there:
    on Qwen the 3-D (t, h, w) positions the tokens had unpruned, on LLaVA their 1-D prompt positions (FastV,
    DART; PyramidDrop as published numbers them afresh on LLaVA)."""
    name, model, proc, mixed = built
    attn = model.model.language_model.layers[1].self_attn
    seen = []

    def hook(_m, args, kwargs):
        seen.append((kwargs.get("hidden_states", args[0] if args else None), kwargs["position_embeddings"][0]))

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(**mixed)
        stock_hidden, stock_cos = seen.pop()
        prune_(model, PruneConfig(scorer=scorer, keep=0.25, llm_layer=1), processor=proc)
        try:
            out = model(**mixed, use_cache=True)
            sel = visprune.last_selection(model)
        finally:
            unprune_(model)
        hidden, cos = seen.pop()
    finally:
        handle.remove()
    ids = mixed["input_ids"][0]
    cols = _kept_columns(model, ids, sel)
    n_video = int((ids == model.config.video_token_id).sum())
    assert sum(len(k) for k, m in zip(sel.kept, sel.modalities) if m == "video") < n_video // 2
    assert hidden.shape[1] == len(cols) and out.past_key_values.layers[1].keys.shape[-2] == len(cols)
    assert torch.allclose(hidden[0], stock_hidden[0, cols], atol=1e-5)
    if name in QWEN or scorer != "pdrop":
        assert torch.equal(cos[0], stock_cos[0, cols])
    if name in QWEN:  # the kept video tokens span frame pairs whose t positions differ
        full, _ = model.model.get_rope_index(
            mixed["input_ids"], mm_token_type_ids=mixed["mm_token_type_ids"], image_grid_thw=mixed["image_grid_thw"],
            video_grid_thw=mixed["video_grid_thw"], attention_mask=mixed["attention_mask"])
        video_cols = cols[ids[cols] == model.config.video_token_id]
        assert len(set(full[0, 0, video_cols].tolist())) > 1


def _qwen_batch(proc):
    vids = [frames(4), frames(6, seed=2)]
    texts = [T.qwen_prompt(q, n_images=0, n_videos=1) for q in ("what changed ?", "how many ?")]
    return proc(videos=vids, text=texts), [proc(videos=[v], text=[t]) for v, t in zip(vids, texts)]


@pytest.mark.parametrize("beams", [1, 2])
@pytest.mark.parametrize("scorer", IN_LLM)
@torch.no_grad()
def test_batched_clips_equal_one_by_one(built, scorer, beams):
    """Two clips of different lengths (Qwen: 2 and 3 frame pairs; LLaVA: a busy and a still clip), ragged
    energy budgets, greedy and beam search."""
    name, model, proc, _ = built
    if name in QWEN:
        batch, singles = _qwen_batch(proc)
    else:
        clips = [T.images(4, seed=5), [T.images(1, seed=6)[0]] * 4]
        batch, singles = video_inputs(model, proc, clips), [video_inputs(model, proc, [c]) for c in clips]
    prune_(model, PruneConfig(scorer=scorer, budget="energy", energy=0.9, llm_layer=1), processor=proc)
    try:
        assert_batched_equals_one_by_one(model, batch, singles, max_new_tokens=4, num_beams=beams)
    finally:
        unprune_(model)


@pytest.mark.parametrize("scorer", IN_LLM)
@torch.no_grad()
def test_mixed_batch_equals_its_rows_alone(scorer):
    """Qwen2-VL: an image and a video in one row, a longer video in the other: every entry keeps what its
    row keeps alone, and each row generates what it generates alone."""
    model, proc = T.qwen2_vl()
    pics, vids = frames(1, seed=3), [frames(4), frames(6, seed=2)]
    texts = [T.qwen_prompt("what changed ?", n_images=1, n_videos=1), T.qwen_prompt("how many ?", n_images=0, n_videos=1)]
    batch = proc(images=pics, videos=vids, text=texts)
    singles = [proc(images=pics, videos=vids[:1], text=texts[:1]), proc(videos=vids[1:], text=texts[1:])]
    prune_(model, PruneConfig(scorer=scorer, budget="energy", energy=0.9, llm_layer=1), processor=proc)
    try:
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)
        kept = visprune.last_kept(model)
        assert visprune.last_selection(model).image_rows == [0, 0, 1]
        alone = []
        for row, one in enumerate(singles):
            single = model.generate(**one, max_new_tokens=4, do_sample=False)
            alone += visprune.last_kept(model)
            new = single[0, one["input_ids"].shape[1]:]
            assert torch.equal(new, out[row, batch["input_ids"].shape[1]:][: len(new)])
    finally:
        unprune_(model)
    assert len(alone) == 3 and all(torch.equal(a, b) for a, b in zip(alone, kept))
    assert len({len(k) for k in kept}) > 1


@torch.no_grad()
def test_in_llm_with_the_temporal_stage_keeps_no_repeat():
    """A still clip: its repeated frame pairs are neither ranked nor kept by the in-LLM cut."""
    model, proc = T.qwen2_vl()
    still = [frames(1, seed=4)[0]] * 6
    inputs = proc(videos=[still], text=[T.qwen_prompt("what moves ?", n_images=0, n_videos=1)])
    for scorer in IN_LLM:
        prune_(model, PruneConfig(scorer=scorer, keep=1.0, llm_layer=1, temporal=0.99), processor=proc)
        try:
            model(**inputs)
            sel = visprune.last_selection(model)
        finally:
            unprune_(model)
        assert sel.temporal_dropped == [48] and sel.group_kept == [[24, 0, 0]], scorer
