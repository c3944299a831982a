"""FastV: pruning inside the language model, checked against eager attention and one-by-one runs."""

import pytest
import torch

import visprune
from helpers import assert_batched_equals_one_by_one
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T

QUESTIONS = ["what colour is the star ?", "how many circle ?"]


@pytest.fixture(scope="module")
def built():
    model, proc = T.llava()
    imgs = T.images(2)
    inputs = proc(images=imgs, text=[T.prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    return model, proc, inputs, imgs


@torch.no_grad()
def test_keep_all_equals_stock(built):
    model, proc, inputs, _ = built
    ref = model(**inputs).logits
    gref = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    prune_(model, PruneConfig(scorer="fastv", keep=1.0, llm_layer=1), processor=proc)
    try:
        real = inputs["attention_mask"].bool()  # logits at padding positions mean nothing, stock or not
        assert (model(**inputs).logits - ref)[real].abs().max().item() <= 1e-5
        assert torch.equal(model.generate(**inputs, max_new_tokens=5, do_sample=False), gref)
    finally:
        unprune_(model)
    assert torch.equal(model(**inputs).logits, ref)
    assert all(not m._forward_pre_hooks for m in model.model.language_model.layers)


@torch.no_grad()
def test_scores_are_the_last_tokens_eager_attention(built):
    model, proc, inputs, _ = built
    prune_(model, PruneConfig(scorer="fastv", keep=0.5, llm_layer=1), processor=proc)
    try:
        model(**inputs)
        scores = visprune.last_selection(model).scores
    finally:
        unprune_(model)
    eager = type(model)._from_config(model.config, attn_implementation="eager").eval()
    eager.load_state_dict(model.state_dict())
    att = eager(**inputs, output_attentions=True).attentions[0]  # layer K-1 = 0: [B, H, L, L]
    image = inputs["input_ids"] == model.config.image_token_id
    for b in range(2):
        ref = att[b, :, -1].mean(0)[image[b]]
        assert torch.allclose(scores[b], ref, atol=1e-6)


@torch.no_grad()
def test_later_layers_and_their_cache_hold_only_kept_tokens(built):
    model, proc, inputs, _ = built
    lengths = []
    hooks = [layer.register_forward_pre_hook(lambda _m, a, kw: lengths.append(
        (kw.get("hidden_states", a[0] if a else None)).shape[1]), with_kwargs=True)
        for layer in model.model.language_model.layers]
    prune_(model, PruneConfig(scorer="fastv", k=4, llm_layer=1), processor=proc)
    try:
        out = model(**{k: v[:1] for k, v in inputs.items()}, use_cache=True)
    finally:
        unprune_(model)
        for h in hooks:
            h.remove()
    n_text = int(((inputs["input_ids"][0] != model.config.image_token_id) & inputs["attention_mask"][0].bool()).sum())
    full = inputs["input_ids"].shape[1]
    # layer 0 sees the whole row (padding included); the layer hooks in order see the shortened row
    assert lengths[0] == full
    cache = out.past_key_values
    assert cache.layers[0].keys.shape[-2] == full
    assert cache.layers[1].keys.shape[-2] == n_text + 4


@pytest.mark.parametrize("beams", [1, 2])
@pytest.mark.parametrize("settings", [{"keep": 0.5}, {"energy": 0.8}])
@torch.no_grad()
def test_batched_equals_one_by_one(built, beams, settings):
    model, proc, inputs, imgs = built
    prune_(model, PruneConfig(scorer="fastv", llm_layer=1, **settings), processor=proc)
    try:
        singles = [proc(images=[img], text=[T.prompt(q)], return_tensors="pt") for img, q in zip(imgs, QUESTIONS)]
        assert_batched_equals_one_by_one(model, inputs, singles, max_new_tokens=5, num_beams=beams,
                                         ragged="energy" in settings)
    finally:
        unprune_(model)


@torch.no_grad()
def test_fastv_on_qwen2_vl():
    model, proc = T.qwen2_vl()
    inputs = proc(images=T.images(2, size=(112, 168)), text=[T.qwen_prompt(q) for q in QUESTIONS])
    gref = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    prune_(model, PruneConfig(scorer="fastv", keep=1.0, llm_layer=1), processor=proc)
    try:
        assert torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False), gref)
    finally:
        unprune_(model)
    prune_(model, PruneConfig(scorer="fastv", keep=0.25, llm_layer=1), processor=proc)
    try:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 4
        assert [len(k) for k in visprune.last_kept(model)] == [6, 6]
    finally:
        unprune_(model)


@torch.no_grad()
def test_deeper_language_model_equals_one_by_one():
    """Several layers after K (each gets the shortened output of the one before), no padding."""
    model, proc = T.llava(text=(32, 4))
    imgs = T.images(2)
    inputs = proc(images=imgs, text=[T.prompt("is there a star ?"), T.prompt("is there a dog ?")],
                  return_tensors="pt", padding=True)
    assert bool(inputs["attention_mask"].all())
    gref = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    prune_(model, PruneConfig(scorer="fastv", keep=1.0, llm_layer=2), processor=proc)
    try:
        assert torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False), gref)
    finally:
        unprune_(model)
    prune_(model, PruneConfig(scorer="fastv", energy=0.8, llm_layer=2), processor=proc)
    try:
        singles = [proc(images=[img], text=[T.prompt(q)], return_tensors="pt")
                   for img, q in zip(imgs, ["is there a star ?", "is there a dog ?"])]
        assert_batched_equals_one_by_one(model, inputs, singles, max_new_tokens=4)
    finally:
        unprune_(model)


def test_llm_layer_must_exist():
    model, proc = T.llava()
    with pytest.raises(ValueError, match="llm_layer=2 but the language model has 2 layers"):
        prune_(model, PruneConfig(scorer="fastv", keep=0.5), processor=proc)
    with pytest.raises(ValueError, match="llm_layer"):
        PruneConfig(scorer="fastv", llm_layer=0)
