"""prune_ / unprune_ on tiny IDEFICS models, with and without the perceiver resampler."""

import pytest
import torch

from visprune import testing as T
import visprune
from visprune import PruneConfig, prune_, unprune_

QUESTIONS = ["what colour is the star ?", "how many ?"]


@pytest.fixture(scope="module", params=[True, False], ids=["resampler", "no_resampler"])
def built(request):
    model, proc = T.idefics(resampler=request.param)
    imgs = T.images(2)
    inputs = proc(text=T.idefics_prompts(imgs, QUESTIONS), return_tensors="pt", padding=True)
    return model, proc, inputs, imgs


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
