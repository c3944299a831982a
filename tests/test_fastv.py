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


def _llava_with(text_config):
    """A tiny LLaVA whose language model is ``text_config``'s (real transformers classes)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    tok = T.tokenizer()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=56, patch_size=14)
    cfg = LlavaConfig(vision_config=vision, text_config=text_config, image_token_id=tok.convert_tokens_to_ids("<image>"))
    return LlavaForConditionalGeneration(cfg).eval()


TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8)


@pytest.mark.parametrize("kind, why", [
    ("qwen3", "QK-norm"),
    ("mistral", "sliding_attention"),
    ("qwen3_next", "linear_attention"),
])
def test_fastv_is_refused_on_attention_it_does_not_rebuild(kind, why):
    """QK-norm (Qwen3, Gemma 3), sliding windows (Mistral, Gemma 3) and linear attention (Qwen3.5 /
    Qwen3-Next): refused at prune_, before any model runs, naming what to use instead."""
    from transformers import AutoConfig

    extra = {"mistral": dict(sliding_window=8), "qwen3_next": dict(layer_types=["linear_attention", "full_attention",
                                                                                "full_attention"])}.get(kind, {})
    model = _llava_with(AutoConfig.for_model(kind, **TEXT, **extra))
    with pytest.raises(TypeError, match=why) as err:
        prune_(model, PruneConfig(scorer="fastv", keep=0.5, llm_layer=2))
    assert "scorer='atp'" in str(err.value)
    assert not visprune.is_pruned(model)
    prune_(model, PruneConfig(scorer="cls", keep=0.5))  # pruning before the language model still works there
    unprune_(model)


def test_fastv_runs_on_full_attention_without_qk_norm():
    """Qwen2's language model (no QK-norm, sliding window off) is accepted."""
    from transformers import AutoConfig

    model = _llava_with(AutoConfig.for_model("qwen2", **{k: v for k, v in TEXT.items() if k != "head_dim"}))
    prune_(model, PruneConfig(scorer="fastv", keep=0.5, llm_layer=2))
    unprune_(model)
