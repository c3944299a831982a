"""prune_ / unprune_ on tiny BLIP-2 (OPT) and InstructBLIP (Llama) models, both cut points."""

import pytest
import torch

from visprune import testing as T
import visprune
from visprune import PruneConfig, prune_, unprune_

ARCHS = {"blip2": T.blip2, "instructblip": T.instructblip}
QUESTIONS = ["what colour is the star ?", "how many ?"]  # different lengths: padded rows


def cfg(cut, **kw):
    return PruneConfig(cut=cut, **kw)


@pytest.fixture(scope="module", params=list(ARCHS))
def built(request):
    model, proc = ARCHS[request.param]()
    imgs = T.images(2)
    inputs = proc(images=imgs, text=[T.blip_prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    return model, proc, inputs, imgs


@torch.no_grad()
def test_query_cut_language_model_sees_exactly_the_kept_queries(built):
    model, proc, inputs, _ = built
    seen = {}

    def grab(_module, _args, kwargs):
        seen["embeds"], seen["mask"] = kwargs["inputs_embeds"], kwargs["attention_mask"]

    handle = model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    prune_(model, cfg("query", scorer="lmtext", k=3), processor=proc)
    try:
        model(**inputs)
        sel = visprune.last_selection(model)
        n_query = model.config.num_query_tokens
        assert [len(k) for k in sel.kept] == [3, 3] and all(f.shape[0] == n_query for f in sel.encoded.features)
        # the language model's rows are shorter by exactly the dropped queries
        assert seen["mask"].sum(1).tolist() == (inputs["attention_mask"].sum(1) - (n_query - 3)).tolist()
        # and its input holds the kept projected queries, in order, right before the text
        for i, feats in enumerate(sel.kept_features):
            real = seen["embeds"][i][seen["mask"][i].bool()]
            assert torch.allclose(real[:3], feats, atol=1e-6)
        # the features scored are the stock model's projected query outputs
        stock = model.get_image_features(**{k: v for k, v in inputs.items() if k in (
            "pixel_values", "qformer_input_ids", "qformer_attention_mask")}, return_dict=True).pooler_output
        assert torch.allclose(torch.stack(sel.encoded.features), stock, atol=1e-6)
    finally:
        unprune_(model)
        handle.remove()


@torch.no_grad()
def test_vit_cut_qformer_sees_exactly_the_kept_patches(built):
    model, proc, inputs, imgs = built
    seen = {}
    handle = model.qformer.register_forward_hook(lambda _m, _a, out: seen.__setitem__("q", out.last_hidden_state))
    keys = model.qformer.encoder.layer[0].crossattention.attention.key
    handle2 = keys.register_forward_hook(lambda _m, args, _o: seen.__setitem__("kv_in", args[0]))
    prune_(model, cfg("vit", scorer="cls", energy=0.8), processor=proc)
    try:
        model(**inputs)
        sel = visprune.last_selection(model)
        kept = sel.kept_features
        assert len(kept[0]) != len(kept[1]) and all(k[0] == 0 for k in sel.kept)  # ragged; [CLS] always kept
        batched_q = seen["q"]
        for i, feats in enumerate(kept):
            assert torch.equal(seen["kv_in"][i, : len(feats)], feats)  # the kept patches, padded after them
        # under the padding mask, the batched Q-Former equals one run per image on its kept patches alone
        for i, feats in enumerate(kept):
            q = model.query_tokens
            extra = {}
            if "qformer_input_ids" in inputs:
                ids, m = inputs["qformer_input_ids"][i : i + 1], inputs["qformer_attention_mask"][i : i + 1]
                extra = dict(input_ids=ids, attention_mask=torch.cat([torch.ones(1, q.shape[1], dtype=m.dtype), m], 1))
            alone = model.qformer(query_embeds=q, encoder_hidden_states=feats[None], **extra).last_hidden_state
            assert torch.allclose(alone, batched_q[i : i + 1], atol=1e-5)
        # the language model still sees every query token: the prompt is unchanged
        assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 2 * model.config.num_query_tokens
    finally:
        unprune_(model)
        handle.remove()
        handle2.remove()


@torch.no_grad()
def test_vit_cls_saliency_equals_eager_attention_row(built):
    model, proc, inputs, _ = built
    prune_(model, cfg("vit", scorer="cls", keep=0.5), processor=proc)
    try:
        model(**inputs)
        sal = visprune.last_selection(model).encoded.saliency
    finally:
        unprune_(model)
    tower = model.vision_model
    eager = type(tower)._from_config(tower.config, attn_implementation="eager").eval()
    eager.load_state_dict(tower.state_dict())
    att = eager(inputs["pixel_values"], output_attentions=True).attentions[-1]  # the layer the Q-Former reads
    ref = att[:, :, 0].mean(1)
    assert torch.allclose(torch.stack(sal), ref, atol=1e-5)


@pytest.mark.parametrize(
    "cut, scorer, match",
    [("query", "cls", "lmtext"), ("query", "visionzip", "lmtext"), ("query", "pool", "patch grid"),
     ("query", "atp", "cut='vit'"), ("vit", "lmtext", "cut='query'"), ("vit", "atp", "cut='query'")],
)
def test_scorers_that_do_not_fit_a_cut_are_refused(built, cut, scorer, match):
    model, proc, _, _ = built
    cls = type(model)
    with pytest.raises(TypeError, match=match):
        prune_(model, cfg(cut, scorer=scorer, keep=0.5), processor=proc)
    assert type(model) is cls and not visprune.is_pruned(model)
    with pytest.raises(ValueError, match="unknown cut"):
        prune_(model, cfg("latents", scorer="random"), processor=proc)
    assert not visprune.is_pruned(model)


def test_savings_rows_follow_the_cuts():
    """The BLIP-2 and IDEFICS savings rows (``docs/savings.md``) on tiny meta-device configs: the cuts behave as
    documented."""
    from visprune.adapters import blip2, idefics

    by_cut, by_vit = blip2.savings(tiny=True)
    assert "query" in by_cut.name and "vit" in by_vit.name
    query, vit = by_cut.rows, by_vit.rows
    assert [r.lm_visual for r in query] == [8, 4, 2] and query[1].lm < query[0].lm  # the LM input shrinks
    assert [r.lm_visual for r in vit] == [8, 8, 8] and len({r.lm for r in vit}) == 1  # the LM input does not
    assert vit[2].connector < vit[0].connector and len({r.vision for r in vit + query}) == 1
    [section] = idefics.savings(tiny=True)
    rows = section.rows
    assert len({r.lm for r in rows}) == 1 and rows[2].connector < rows[0].connector


@torch.no_grad()
def test_flan_t5_encoder_decoder_language_model():
    """BLIP-2 with an encoder-decoder language model (the FLAN-T5 checkpoints): the encoder input is
    shortened; ``generate`` returns decoder tokens only, as the stock model does."""
    model, proc = T.blip2(lm="t5")
    imgs = T.images(2)
    inputs = proc(images=imgs, text=[T.blip_prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    dec = torch.zeros(2, 3, dtype=torch.long)
    ref = model(**inputs, decoder_input_ids=dec).logits
    gref = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    prune_(model, cfg("query", scorer="random", keep=1.0), processor=proc)
    try:
        assert (model(**inputs, decoder_input_ids=dec).logits - ref).abs().max().item() <= 1e-5
        assert torch.equal(model.generate(**inputs, max_new_tokens=5, do_sample=False), gref)
    finally:
        unprune_(model)
    prune_(model, cfg("query", scorer="random", k=3), processor=proc)
    try:
        seen = {}
        handle = model.language_model.encoder.register_forward_pre_hook(
            lambda _m, _a, kw: seen.__setitem__("mask", kw["attention_mask"]), with_kwargs=True)
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        handle.remove()
        assert out.shape == (2, 6)  # decoder start token + 5 new tokens, no prompt
        drop = model.config.num_query_tokens - 3
        assert seen["mask"].sum(1).tolist() == (inputs["attention_mask"].sum(1) - drop).tolist()
    finally:
        unprune_(model)
