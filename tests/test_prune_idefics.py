"""prune_ / unprune_ on tiny IDEFICS models, with and without the perceiver resampler."""

import pytest
import torch

from visprune import testing as T
import visprune
from helpers import assert_batched_equals_one_by_one
from visprune import PruneConfig, prune_, unprune_

QUESTIONS = ["what colour is the star ?", "how many ?"]


@pytest.fixture(scope="module", params=[True, False], ids=["resampler", "no_resampler"])
def built(request):
    model, proc = T.idefics(resampler=request.param)
    imgs = T.images(2)
    inputs = proc(text=T.idefics_prompts(imgs, QUESTIONS), return_tensors="pt", padding=True)
    return model, proc, inputs, imgs


def _single(proc, img, q):
    return proc(text=T.idefics_prompts([img], [q]), return_tensors="pt", padding=True)


@torch.no_grad()
def test_keep_all_equals_stock(built):
    model, proc, inputs, _ = built
    ref = model(**inputs).logits
    gref = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    for scorer in ("cls", "random", "visionzip", "pool", "divprune"):
        prune_(model, PruneConfig(scorer=scorer, keep=1.0), processor=proc)
        try:
            assert (model(**inputs).logits - ref).abs().max().item() <= 1e-5
            assert torch.equal(model.generate(**inputs, max_new_tokens=5, do_sample=False), gref)
        finally:
            unprune_(model)


@pytest.mark.parametrize("beams", [1, 2])
@torch.no_grad()
def test_mixed_budgets_batched_equal_one_by_one(built, beams):
    model, proc, inputs, imgs = built
    prune_(model, PruneConfig(scorer="cls", energy=0.8), processor=proc)
    try:
        singles = [_single(proc, img, q) for img, q in zip(imgs, QUESTIONS)]
        assert_batched_equals_one_by_one(model, inputs, singles, num_beams=beams)
    finally:
        unprune_(model)


@torch.no_grad()
def test_generate_returns_callers_prompt(built):
    model, proc, inputs, _ = built
    prune_(model, PruneConfig(scorer="random", keep=0.5), processor=proc)
    try:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
        assert torch.equal(out.sequences[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
        assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + 4
    finally:
        unprune_(model)


def _module_state(model):
    return [(dict(m._forward_hooks), dict(m._forward_pre_hooks), "forward" in m.__dict__) for m in model.modules()]


@torch.no_grad()
def test_unprune_is_exact(built):
    model, proc, inputs, _ = built
    cls = type(model)
    before = model(**inputs).logits
    params = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _module_state(model)
    prune_(model, PruneConfig(scorer="cls", keep=0.25), processor=proc)
    model(**inputs)
    model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert _module_state(model) == hooks
    unprune_(model)
    assert type(model) is cls and not visprune.is_pruned(model)
    assert _module_state(model) == hooks
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(**inputs).logits, before)


@torch.no_grad()
def test_model_reads_exactly_the_kept_patches(built):
    model, proc, inputs, _ = built
    base = model.model
    seen = {"contexts": [], "masks": []}
    h = [base.register_forward_pre_hook(lambda _m, _a, kw: seen.__setitem__("kw", kw), with_kwargs=True)]
    if base.config.use_resampler:
        h.append(base.perceiver_resampler.register_forward_hook(lambda _m, _a, out: seen["contexts"].append(out)))
    else:
        attn = base.gated_cross_attn_layers[0].cross_attn
        h.append(attn.register_forward_pre_hook(lambda _m, _a, kw: seen["masks"].append(kw["attention_mask"]),
                                                with_kwargs=True))
    prune_(model, PruneConfig(scorer="cls", energy=0.8), processor=proc)
    try:
        model(**inputs)
        sel = visprune.last_selection(model)
        kept = sel.kept_features
        assert len(kept[0]) != len(kept[1]) and all(k[0] == 0 for k in sel.kept)  # ragged; [CLS] kept
        assert seen["kw"].get("pixel_values") is None  # the vision tower ran once, in encode
        if base.config.use_resampler:
            # the latents the language model reads are the stock resampler's, run on each image's kept patches alone
            latents = torch.cat(seen["contexts"])  # one run per image (< 5.24) or one wrapped run
            alone = torch.cat([base.perceiver_resampler(f[None]) for f in kept])
            assert latents.shape == (2, base.config.perceiver_config.resampler_n_latents, kept[0].shape[-1])
            assert torch.equal(latents, alone)
        else:
            patches = seen["kw"]["image_encoder_embeddings"]  # [B, images, slots, D], right-padded
            mask = seen["masks"][0]  # [B, 1, T, slots], additive, as the cross-attention applies it
            text_rows = inputs["image_attention_mask"][:, :, 0].bool()
            for i, f in enumerate(kept):
                assert torch.equal(patches[i, 0, : len(f)], f)
                visible = mask[i, 0][text_rows[i]] == 0  # the rows of text tokens that see the image
                assert visible[:, : len(f)].all() and not visible[:, len(f):].any()
        # the prompt is left as it is
        assert seen["kw"]["input_ids"].shape == inputs["input_ids"].shape
    finally:
        unprune_(model)
        for handle in h:
            handle.remove()


@torch.no_grad()
def test_several_images_per_prompt(built):
    model, proc, _, _ = built
    imgs = T.images(3)
    prompts = [["USER:", imgs[0], imgs[1], "what colour is the star ? ASSISTANT:"], ["USER:", imgs[2], "how many ? ASSISTANT:"]]
    inputs = proc(text=prompts, return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape[1] == 2  # the second row has a padding image
    prune_(model, PruneConfig(scorer="cls", keep=1.0), processor=proc)
    try:
        assert (model(**inputs).logits - _stock(model, inputs)).abs().max().item() <= 1e-5
        assert visprune.last_selection(model).image_rows == [0, 0, 1, 1]
    finally:
        unprune_(model)


def _stock(model, inputs):
    state = visprune.transform._state(model)
    return state.original_class.forward(model, **inputs).logits


def test_lmtext_is_refused(built):
    model, proc, _, _ = built
    with pytest.raises(TypeError, match="embedding space"):
        prune_(model, PruneConfig(scorer="lmtext", keep=0.5), processor=proc)
    assert not visprune.is_pruned(model)
