"""DART and PyramidDrop (in-LLM, sharing FastV's hooks): the kept tokens against references written
here from the published algorithms on an eager copy of the model, the shortened layers and cache,
keep-all equals stock, batched (ragged, greedy and beam) equals one by one, refusals."""

import math

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import visprune
from helpers import assert_batched_equals_one_by_one
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T
from visprune.scoring.scorers.dart import DartScorer
from visprune.scoring.scorers.pdrop import PyramidDropScorer

QUESTIONS = ["what colour is the star ?", "how many circle ?"]


@pytest.fixture(scope="module")
def deep():
    """A tiny LLaVA with a 4-layer language model (three PyramidDrop stages by default)."""
    model, proc = T.llava(text=(32, 4))
    imgs = T.images(2)
    inputs = proc(images=imgs, text=[T.prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    singles = [proc(images=[img], text=[T.prompt(q)], return_tensors="pt") for img, q in zip(imgs, QUESTIONS)]
    eager = type(model)._from_config(model.config, attn_implementation="eager").eval()
    eager.load_state_dict(model.state_dict())
    return model, proc, inputs, singles, eager


def _kept(model, cfg, proc, inputs):
    prune_(model, cfg, processor=proc)
    try:
        model(**inputs)
        return visprune.last_kept(model)
    finally:
        unprune_(model)


def _rotary(lm, h, positions):
    return lm.rotary_emb(h, positions)


def _keys(layer, h, cos, sin):
    """Layer ``layer``'s keys of the hidden states ``h`` ([1, L, D]), rotary applied, kv heads repeated."""
    attn = layer.self_attn
    x = layer.input_layernorm(h)
    k = attn.k_proj(x).view(1, h.shape[1], -1, attn.head_dim).transpose(1, 2)
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    return k.repeat_interleave(attn.num_key_value_groups, dim=1)


def dart_reference(eager, inputs, K, k, n_piv_img=4, n_piv_txt=4):
    """DART's get_retained_image_token (official LLaVA code), on one unpadded sample."""
    lm = eager.model.language_model
    out = eager(**inputs, output_hidden_states=True)
    hs = out.hidden_states  # embeddings, then each layer's output
    ids = inputs["input_ids"][0]
    image = (ids == eager.config.image_token_id).nonzero().flatten()
    start, length = int(image[0]), len(image)
    positions = torch.arange(ids.shape[0])[None]
    cos, sin = _rotary(lm, hs[K - 1], positions)
    keys = _keys(lm.layers[K - 1], hs[K - 1], cos, sin)  # [1, H, L, D]
    keys = keys.permute(0, 2, 1, 3).reshape(1, ids.shape[0], -1)[0]
    last = lm.norm(hs[K])[0]
    topk = (k - n_piv_img) // (n_piv_img + n_piv_txt)
    img_norm = keys[start : start + length].norm(p=1, dim=-1)
    txt_norm = keys[start + length :].norm(p=1, dim=-1)
    image_piv = (img_norm.topk(n_piv_img).indices + start).tolist()
    text_piv = (txt_norm.topk(n_piv_txt).indices + start + length).tolist()
    chosen = set(image_piv + text_piv)
    pool = set(range(start, start + length)) - set(image_piv)
    for p in list(chosen):
        cands = list(pool)
        sim = -torch.nn.functional.cosine_similarity(last[p], last[cands], dim=-1)
        picks = [cands[j] for j in sim.topk(topk).indices.tolist()]
        chosen.update(picks)
        pool.difference_update(picks)
    chosen.difference_update(text_piv)
    return torch.tensor(sorted(chosen)) - start


def pdrop_reference(eager, inputs, stages, ratios, compact=True):
    """PyramidDrop's pdrop_rank_drop (official LLaVA code) on one unpadded sample, the layers run by
    hand on the kept tokens: renumbered 0, 1, ... after each drop (official), or at their original
    positions (``compact=False``). Returns the kept image tokens' indices."""
    lm = eager.model.language_model
    h = eager(**inputs, output_hidden_states=True).hidden_states[0]
    ids = inputs["input_ids"][0]
    image = (ids == eager.config.image_token_id).nonzero().flatten()
    n = len(image)
    pos = torch.arange(ids.shape[0])
    token = torch.arange(ids.shape[0])  # which prompt token each row of h is
    is_img = ids == eager.config.image_token_id
    for j, layer in enumerate(lm.layers):
        cos, sin = _rotary(lm, h, pos[None])
        if j in stages:
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(1, h.shape[1], -1, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(1, h.shape[1], -1, attn.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k = k.repeat_interleave(attn.num_key_value_groups, dim=1)
            w = torch.softmax((q[:, :, -1:] @ k.transpose(-1, -2)) / math.sqrt(attn.head_dim), dim=-1, dtype=torch.float32)
            w = w.mean(1)[0, 0]
            img_slots = is_img.nonzero().flatten()
            keep_n = int(n * ratios[stages.index(j)] + 1e-6)
            top = img_slots[w[img_slots].topk(keep_n).indices]
            keep = ~is_img
            keep[top] = True
            h, pos, is_img, token = h[:, keep], pos[keep], is_img[keep], token[keep]
            if compact:
                pos = torch.arange(h.shape[1])
            cos, sin = _rotary(lm, h, pos[None])
        mask = torch.full((h.shape[1], h.shape[1]), torch.finfo(h.dtype).min).triu(1)[None, None]
        h = layer(h, attention_mask=mask, position_embeddings=(cos, sin), position_ids=pos[None])
        h = h[0] if isinstance(h, tuple) else h
    return token[is_img] - int(image[0])


@torch.no_grad()
@pytest.mark.parametrize("K", [1, 2])
def test_dart_keeps_the_official_selection(deep, K):
    model, proc, _, singles, eager = deep
    for one in singles:
        n = int((one["input_ids"] == model.config.image_token_id).sum())
        k = 4 + 8 * 1  # 4 image pivots + 1 per pivot: the official TOKEN_TOPK with max_num_trunction=8
        kept = _kept(model, PruneConfig(scorer="dart", k=k, llm_layer=K), proc, one)[0]
        ref = dart_reference(eager, one, K, k)
        assert len(kept) == k < n
        assert torch.equal(kept, ref)


@torch.no_grad()
@pytest.mark.parametrize("positions", ["compact", "original"])
def test_pdrop_keeps_the_official_selection(deep, positions):
    model, proc, _, singles, eager = deep
    scorer = PyramidDropScorer(positions=positions)
    for one in singles:
        kept = _kept(model, PruneConfig(scorer=scorer, keep=0.125), proc, one)[0]
        # lambda = 0.5, the official setting
        ref = pdrop_reference(eager, one, [1, 2, 3], [0.5, 0.25, 0.125], compact=positions == "compact")
        assert torch.equal(kept, ref)
        assert len(kept) == 2


@torch.no_grad()
def test_pdrop_compact_positions_are_the_official_ones(deep):
    """After each stage the kept tokens are numbered afresh; decoding continues after the last one."""
    model, proc, _, singles, _ = deep
    one = singles[0]
    seen = {}
    hooks = [layer.register_forward_hook(lambda m, a, kw, out, j=j: seen.setdefault(j, []).append(
        kw["position_ids"].clone()), with_kwargs=True) for j, layer in enumerate(model.model.language_model.layers)]
    prune_(model, PruneConfig(scorer="pdrop", keep=0.125), processor=proc)
    try:
        model.generate(**one, max_new_tokens=2, do_sample=False)
    finally:
        unprune_(model)
        for h in hooks:
            h.remove()
    full = one["input_ids"].shape[1]
    n_text = full - 16
    for j, kept in enumerate([16, 8, 4, 2]):
        prefill, step = seen[j][0], seen[j][1]
        assert torch.equal(prefill[0], torch.arange(n_text + kept))
        assert step.flatten().tolist() == [n_text + kept]


@torch.no_grad()
def test_pdrop_stage_layers_are_a_setting(deep):
    model, proc, _, singles, eager = deep
    kept = _kept(model, PruneConfig(scorer=PyramidDropScorer(layers=[2]), keep=0.25), proc, singles[0])[0]
    assert torch.equal(kept, pdrop_reference(eager, singles[0], [2], [0.25]))
    with pytest.raises(ValueError, match="stage layers go from 1 to 3"):
        prune_(model, PruneConfig(scorer=PyramidDropScorer(layers=[2, 4]), keep=0.25), processor=proc)
    assert not visprune.is_pruned(model)
    with pytest.raises(ValueError, match="ascending"):
        PyramidDropScorer(layers=[3, 1])
    assert PyramidDropScorer().stage_layers(None, 32) == [8, 16, 24]  # the official layer_list
    assert PyramidDropScorer().stage_layers(None, 2) == [1]
    with pytest.raises(ValueError, match="at least 2 layers"):
        PyramidDropScorer().stage_layers(None, 1)


@pytest.mark.parametrize("scorer", ["dart", "pdrop"])
@torch.no_grad()
def test_later_layers_and_their_cache_hold_only_kept_tokens(deep, scorer):
    model, proc, inputs, singles, _ = deep
    one = singles[0]
    lengths = []
    hooks = [layer.register_forward_pre_hook(lambda _m, a, kw: lengths.append(
        (kw.get("hidden_states", a[0] if a else None)).shape[1]), with_kwargs=True)
        for layer in model.model.language_model.layers]
    prune_(model, PruneConfig(scorer=scorer, keep=0.25, llm_layer=2), processor=proc)
    try:
        out = model(**one, use_cache=True)
    finally:
        unprune_(model)
        for h in hooks:
            h.remove()
    full = one["input_ids"].shape[1]
    n = int((one["input_ids"] == model.config.image_token_id).sum())
    n_text = full - n
    cache = [layer.keys.shape[-2] for layer in out.past_key_values.layers]
    if scorer == "dart":  # layers 0, 1 full; 2, 3 the kept 4
        expect = [full, full, n_text + 4, n_text + 4]
    else:  # stages 1, 2, 3: 16 -> 8 -> 6 -> 4 (0.25 = (0.25)^(s/3) of 16)
        expect = [full] + [n_text + int(n * 0.25 ** (s / 3) + 1e-6) for s in (1, 2, 3)]
    assert cache == expect
    # each layer's input (seen before the pruning hooks shorten a stage layer's) is the layer before's output
    assert lengths == [full] + expect[:-1]


@pytest.mark.parametrize("scorer", ["dart", "pdrop"])
@torch.no_grad()
def test_keep_all_equals_stock(deep, scorer):
    model, proc, inputs, _, _ = deep
    ref = model(**inputs).logits
    gref = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    prune_(model, PruneConfig(scorer=scorer, keep=1.0, llm_layer=1), processor=proc)
    try:
        real = inputs["attention_mask"].bool()
        assert (model(**inputs).logits - ref)[real].abs().max().item() <= 1e-5
        assert torch.equal(model.generate(**inputs, max_new_tokens=5, do_sample=False), gref)
    finally:
        unprune_(model)
    assert torch.equal(model(**inputs).logits, ref)
    assert all(not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("beams", [1, 2])
@pytest.mark.parametrize("scorer", ["dart", "pdrop"])
@torch.no_grad()
def test_batched_equals_one_by_one(deep, scorer, beams):
    model, proc, inputs, singles, _ = deep
    prune_(model, PruneConfig(scorer=scorer, energy=0.8, llm_layer=2), processor=proc)
    try:
        assert_batched_equals_one_by_one(model, inputs, singles, max_new_tokens=4, num_beams=beams)
    finally:
        unprune_(model)


@pytest.mark.parametrize("scorer", ["fastv", "dart", "pdrop"])
@torch.no_grad()
def test_on_qwen2_vl(scorer):
    """Keep-all equals stock and a quarter keeps 6 of 24 per image on Qwen2-VL (M-RoPE), every in-LLM method."""
    model, proc = T.qwen2_vl()
    inputs = proc(images=T.images(2, size=(112, 168)), text=[T.qwen_prompt(q) for q in QUESTIONS])
    gref = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    prune_(model, PruneConfig(scorer=scorer, keep=1.0, llm_layer=1), processor=proc)
    try:
        assert torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False), gref)
    finally:
        unprune_(model)
    prune_(model, PruneConfig(scorer=scorer, keep=0.25, llm_layer=1), processor=proc)
    try:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 4
        assert [len(k) for k in visprune.last_kept(model)] == [6, 6]
    finally:
        unprune_(model)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="pivot_image"):
        DartScorer(pivot_image=-1)
    with pytest.raises(ValueError, match="at least one pivot"):
        DartScorer(pivot_image=0, pivot_text=0)


@pytest.mark.parametrize("scorer", ["dart", "pdrop"])
def test_refused_on_qk_norm(scorer):
    from transformers import AutoConfig

    from test_fastv import TEXT, _llava_with

    model = _llava_with(AutoConfig.for_model("qwen3", **TEXT))
    with pytest.raises(TypeError, match="QK-norm") as err:
        prune_(model, PruneConfig(scorer=scorer, keep=0.5, llm_layer=2))
    assert scorer in str(err.value) and "scorer='atp'" in str(err.value)
    assert not visprune.is_pruned(model)
