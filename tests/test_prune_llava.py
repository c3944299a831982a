"""prune_ / unprune_ on tiny LLaVA, LLaVA-NeXT and LLaVA-OneVision models with real processors."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration

from visprune import testing as T
import visprune
from visprune import PruneConfig, prune_, unprune_

ARCHS = list(T.BUILDERS)
QUESTIONS = ["what colour is the star ?", "how many circle ?"]


def _size(arch):
    return (T.IMAGE, T.IMAGE) if arch == "llava" else (T.IMAGE, 2 * T.IMAGE)


@pytest.fixture(scope="module", params=ARCHS)
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def built(arch):
    model, proc = T.BUILDERS[arch]()
    imgs = T.images(2, size=_size(arch))
    inputs = proc(images=imgs, text=[T.prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    return model, proc, inputs, imgs


@torch.no_grad()
def test_language_model_receives_exactly_the_kept_tokens(built):
    model, proc, inputs, _ = built
    seen = {}

    def grab(_module, args, kwargs):
        seen["ids"] = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]

    def grab_lm(_module, _args, kwargs):
        seen["lm_embeds"] = kwargs["inputs_embeds"]

    h1 = model.model.register_forward_pre_hook(grab, with_kwargs=True)
    h2 = model.model.language_model.register_forward_pre_hook(grab_lm, with_kwargs=True)
    try:
        prune_(model, PruneConfig(scorer="cls", keep=0.25), processor=proc)
        model(**inputs)
        kept = visprune.last_kept(model)
        image_id = model.config.image_token_id
        assert int((seen["ids"] == image_id).sum()) == sum(len(k) for k in kept)
        assert int((inputs["input_ids"] == image_id).sum()) > sum(len(k) for k in kept)
        # the language model's input holds the kept features, in order, where the placeholders are
        sel = visprune.last_selection(model)
        feats = torch.cat(sel.kept_features)
        placed = seen["lm_embeds"][seen["ids"] == image_id]
        assert torch.allclose(placed, feats, atol=1e-6)
        for k, f in zip(kept, sel.encoded.features):
            assert k.dtype == torch.int64 and torch.equal(k, torch.sort(torch.unique(k)).values)
            assert 0 < len(k) < f.shape[0]
    finally:
        unprune_(model)
        h1.remove()
        h2.remove()


@torch.no_grad()
def test_generate_takes_input_ids_positionally(built):
    model, proc, inputs, _ = built
    prune_(model, PruneConfig(scorer="random", keep=0.5), processor=proc)
    try:
        out = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             **{k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")},
                             max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
        assert torch.equal(out.sequences[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
        assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + 4
    finally:
        unprune_(model)


@torch.no_grad()
def test_budget_larger_than_tokens_keeps_all(built):
    model, proc, inputs, _ = built
    prune_(model, PruneConfig(scorer="cls", k=100_000), processor=proc)
    try:
        model(**inputs)
        sel = visprune.last_selection(model)
        assert [len(k) for k in sel.kept] == [f.shape[0] for f in sel.encoded.features]
    finally:
        unprune_(model)


@torch.no_grad()
def test_text_free_call_passes_through(built):
    model, proc, inputs, _ = built
    prune_(model, PruneConfig(scorer="cls", keep=0.5), processor=proc)
    try:
        with pytest.raises(ValueError, match="not seen an image yet"):
            visprune.last_kept(model)
        model(**inputs)
        ids = proc.tokenizer(["what colour is the star ?"], return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
        assert out.shape[1] == ids["input_ids"].shape[1] + 3
        with pytest.raises(ValueError, match="last pruned call had no image"):  # not the earlier call's tokens
            visprune.last_kept(model)
    finally:
        unprune_(model)


def _eager_tower(model):
    tower = model.model.vision_tower
    eager = type(tower)._from_config(tower.config, attn_implementation="eager").eval()
    eager.load_state_dict(tower.state_dict())
    return eager


@pytest.mark.parametrize("which", ["llava", "llava_onevision"])
@torch.no_grad()
def test_cls_scorer_equals_eager_attention_row(which):
    model, proc = T.BUILDERS[which]()
    assert model.model.vision_tower.config._attn_implementation == "sdpa"
    img = T.images(1, size=(T.IMAGE, T.IMAGE))
    inputs = proc(images=img, text=[T.prompt("is there a star ?")], return_tensors="pt")
    prune_(model, PruneConfig(scorer="cls", keep=0.5), processor=proc)
    try:
        model(**inputs)
        sal = visprune.last_selection(model).encoded.saliency[0]
    finally:
        unprune_(model)
    assert model.model.vision_tower.config._attn_implementation == "sdpa"
    pixels = inputs["pixel_values"]
    if pixels.dim() == 5:
        pixels = pixels[0, :1]  # base image; the any-resolution crops follow it in the packed order
    att = _eager_tower(model)(pixels, output_attentions=True).attentions
    layer = len(att) - 2 if which == "llava" else len(att) - 1  # vision_feature_layer -2 / -1
    if which == "llava":
        ref = att[layer][0, :, 0, 1:].mean(0)  # [CLS] row, patches only ("default" drops [CLS])
    else:
        ref = att[layer][0].mean(dim=(0, 1))  # SigLIP has no [CLS]: attention received
    assert torch.allclose(sal[: ref.shape[0]], ref, atol=1e-5)


def test_bad_input_fails_at_once_and_leaves_the_model(built):
    model, proc, _, _ = built
    cls = type(model)
    with pytest.raises(ValueError, match="not pruned"):
        unprune_(model)
    with pytest.raises(ValueError, match="text_encoder"):
        prune_(model, PruneConfig(scorer="text"), processor=proc)
    assert type(model) is cls and not visprune.is_pruned(model)
    with pytest.raises(ValueError, match="keep"):
        prune_(model, {"keep": 2.0})
    with pytest.raises(TypeError, match="PruneConfig"):
        prune_(model, "atp")
    assert type(model) is cls and not visprune.is_pruned(model)
    prune_(model, PruneConfig(keep=0.5), processor=proc)
    try:
        with pytest.raises(ValueError, match="already pruned"):
            prune_(model, PruneConfig(keep=0.3))
    finally:
        unprune_(model)


def test_unsupported_models_get_a_type_error():
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=50))
    with pytest.raises(TypeError, match="supported: .*llava, llava_next, llava_next_video, llava_onevision, qwen2_5_vl, qwen2_vl"):
        prune_(llama, PruneConfig())
    assert type(llama) is LlamaForCausalLM
    model, _ = T.llava()
    with pytest.raises(TypeError, match="ForConditionalGeneration"):
        prune_(model.model, PruneConfig())


def test_patching_is_per_instance():
    a, proc = T.llava()
    b, _ = T.llava()
    forward = LlavaForConditionalGeneration.forward
    prune_(a, PruneConfig(keep=0.5), processor=proc)
    try:
        assert type(b) is LlavaForConditionalGeneration
        assert LlavaForConditionalGeneration.forward is forward
        assert type(a) is not LlavaForConditionalGeneration
    finally:
        unprune_(a)


@torch.no_grad()
def test_several_images_in_one_prompt():
    model, proc = T.llava()
    imgs = T.images(3)
    inputs = proc(images=imgs, text=[T.prompt("is there a star ?", 2), T.prompt("how many circle ?", 1)],
                  return_tensors="pt", padding=True)
    prune_(model, PruneConfig(scorer="atp", energy=0.8), processor=proc)
    try:
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
        sel = visprune.last_selection(model)
        assert len(sel.kept) == 3 and sel.image_rows == [0, 0, 1]
        assert sel.questions == ["is there a star ?", "is there a star ?", "how many circle ?"]
    finally:
        unprune_(model)
