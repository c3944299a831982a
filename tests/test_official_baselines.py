"""VisionZip, PruMerge and PruMerge+ against references written here from the official code's
algorithms (dvlab-research/VisionZip ``visionzip/clip_encoder.py``; 42Shawn/LLaVA-PruMerge
``llava/model/multimodal_encoder/clip_encoder.py``), run on the same tiny LLaVA's own tensors:
the same kept patches, and the language model receives exactly the reference's projected tokens in
the reference's order."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import visprune
from visprune import PruneConfig
from visprune import testing as T
from visprune.scoring.scorers import VisionZipScorer

from helpers import eager_tower_outputs, assert_batched_equals_one_by_one, pruned_selection

SIZE = 168  # 12 x 12 = 144 patches: enough for VisionZip's 54 + 10 and PruMerge's 32 neighbours
QUESTION = "what colour is the star ?"


@pytest.fixture(scope="module")
def setup():
    model, proc = T.llava(image=SIZE)
    with torch.no_grad():  # sharper attention: random weights' is near uniform and has no IQR outliers
        for layer in model.model.vision_tower.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    imgs = T.images(2, size=(SIZE, SIZE))
    inputs = proc(images=imgs, text=[T.prompt(QUESTION)] * 2, return_tensors="pt", padding=True)
    return model, proc, inputs


def _layer_qk(layer, x):
    """Full-width q/k projections of one CLIP layer on its input ``x`` (the official hooks' outputs)."""
    h = layer.layer_norm1(x)
    return layer.self_attn.q_proj(h), layer.self_attn.k_proj(h)


@torch.no_grad()
def _visionzip_reference(model, pixel_values, dominant, contextual):
    """The official CLIPVisionTower_VisionZip.forward with visionzip(model, dominant, contextual)."""
    out = eager_tower_outputs(model, pixel_values)
    layers = model.model.vision_tower.encoder.layers
    attn, hidden = out.attentions[-2], out.hidden_states[-2]
    _, k = _layer_qk(layers[-2], out.hidden_states[-3])
    b, t, _ = k.shape
    heads = layers[-2].self_attn.num_heads
    metric = k.view(b, t, heads, -1).mean(2)  # raw_key_states.mean(1) of [B, H, T, hd]
    dominant_num = dominant - 1
    top = attn[:, :, 0, 1:].sum(1).topk(dominant_num, dim=1).indices + 1
    feats, kept = [], []
    for i in range(b):
        keep = torch.ones(t, dtype=torch.bool)
        keep[0] = keep[top[i]] = False
        dom = hidden[i][~keep]  # [CLS] and the dominant patches, original order
        rest_rows = keep.nonzero().flatten()
        m = metric[i][keep]
        m = m / m.norm(dim=-1, keepdim=True)
        step = max(1, m.shape[0] // contextual)
        tgt = torch.arange(0, m.shape[0], step)[:contextual]
        others = ~torch.isin(torch.arange(m.shape[0]), tgt)
        assign = (m[others] @ m[tgt].T).argmax(-1)
        one_hot = F.one_hot(assign, contextual).to(hidden.dtype)  # [others, c]
        counts = one_hot.sum(0).clamp(min=1)[:, None]
        ctx = hidden[i][keep][tgt] + one_hot.T @ hidden[i][keep][others] / counts
        feats.append(model.model.multi_modal_projector(torch.cat([dom, ctx])))
        kept.append(torch.sort(torch.cat([top[i], rest_rows[tgt]]) - 1).values)
    return kept, feats


def _outlier_ratio(cls_attn):
    """The official outlier_dectection (numpy percentiles): the share of scores above Q3 + 1.5 IQR."""
    a = cls_attn.detach().float().numpy().flatten()
    q1, q3 = np.percentile(a, 25), np.percentile(a, 75)
    ratio = len(np.where(a > q3 + 1.5 * (q3 - q1))[0]) / len(a)
    return ratio


@torch.no_grad()
def _prumerge_reference(model, pixel_values, plus, count=None):
    """The official token_prune_merge_advanced(_plus) with if_adaptive=True, one image at a time
    (the official outlier ratio pools the batch); ``count``: a given number of outliers instead."""
    out = eager_tower_outputs(model, pixel_values)
    layers = model.model.vision_tower.encoder.layers
    feats, kept = [], []
    for b in range(pixel_values.shape[0]):
        q, k = _layer_qk(layers[-1], out.hidden_states[-2][b : b + 1])  # the last layer's input
        x = out.hidden_states[-2][b : b + 1, 1:]  # select_layer -2, 'patch'
        _, n, c = x.shape
        cls_attn = F.softmax((q @ k.transpose(-2, -1)) * c**-0.5, dim=-1)[:, 0, 1:]
        ratio = _outlier_ratio(cls_attn) if count is None else count / n
        idx = torch.topk(cls_attn, int(n * ratio), dim=1).indices
        if plus:
            step_length = int(1 / ratio)
            seq = torch.arange(0, n - 1, int(step_length / 3))  # the official arange(0, 575, ...)
            extra = torch.tensor([s for s in seq.tolist() if s not in idx.flatten().tolist()], dtype=torch.long)
            idx = torch.cat([idx, extra[None]], dim=1)
        keys = k[:, 1:]
        compl = torch.tensor(sorted(set(range(n)) - set(idx[0].tolist())), dtype=torch.long)
        x_o, a_o, k_o = x[0, idx[0]], cls_attn[0, idx[0]], F.normalize(keys[0, idx[0]], dim=-1)
        x_n, a_n, k_n = x[0, compl], cls_attn[0, compl], F.normalize(keys[0, compl], dim=-1)
        rows = []
        for i in range(len(idx[0])):
            rest_x = torch.cat([x_o[:i], x_o[i + 1 :], x_n])
            rest_a = torch.cat([a_o[:i], a_o[i + 1 :], a_n])
            rest_k = torch.cat([k_o[:i], k_o[i + 1 :], k_n])
            near = torch.topk(k_o[i] @ rest_k.T, k=min(32, len(rest_k))).indices
            rows.append(x_o[i] + (rest_x[near] * rest_a[near, None]).sum(0))
        tokens = torch.stack(rows)
        if len(compl):
            tokens = torch.cat([tokens, (x_n * a_n[:, None]).sum(0, keepdim=True)])
        feats.append(model.model.multi_modal_projector(tokens))
        kept.append(torch.sort(idx[0]).values)
    return kept, feats


@torch.no_grad()
def _pruned_lm_inputs(model, proc, inputs, config):
    """Prune, run one forward: the kept indices and each image's visual tokens as the language
    model received them (its inputs_embeds at the image run)."""
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["inputs_embeds"].clone()), with_kwargs=True
    )
    sel = pruned_selection(model, proc, inputs, config, hooks=[hook])
    ids = inputs["input_ids"][0]  # the same prompt in each row; rows are re-padded on the left
    start, text = int((ids == model.config.image_token_id).nonzero()[0]), int((ids != model.config.image_token_id).sum())
    width = seen[0].shape[1]
    return sel, [seen[0][i, width - text - n + start : width - text + start] for i, n in enumerate(sel.sent)]


@pytest.mark.parametrize("k", [64, 20])
def test_visionzip_equals_the_official_algorithm(setup, k):
    model, proc, inputs = setup
    contextual = min(round(k * 10 / 64), k - 1)
    ref_kept, ref_feats = _visionzip_reference(model, inputs["pixel_values"], k - contextual, contextual)
    sel, lm = _pruned_lm_inputs(model, proc, inputs, PruneConfig(scorer="visionzip", k=k))
    for i in range(2):
        assert torch.equal(sel.kept[i], ref_kept[i])
        assert lm[i].shape == ref_feats[i].shape == (k, model.config.text_config.hidden_size)
        assert torch.allclose(lm[i], ref_feats[i], atol=1e-5), (lm[i] - ref_feats[i]).abs().max()


@pytest.mark.parametrize("name", ["prumerge", "prumerge+"])
@pytest.mark.parametrize("count", [None, 12])
def test_prumerge_equals_the_official_algorithm(setup, name, count):
    model, proc, inputs = setup
    ref_kept, ref_feats = _prumerge_reference(model, inputs["pixel_values"], name == "prumerge+", count)
    cfg = PruneConfig(scorer=name) if count is None else PruneConfig(scorer=name, k=count)
    assert cfg.budget_name == ("iqr" if count is None else "fixed")
    sel, lm = _pruned_lm_inputs(model, proc, inputs, cfg)
    if count is None:
        assert [len(k) for k in ref_kept] != [1, 1]  # the outlier rule has something to find
    for i in range(2):
        assert torch.equal(sel.kept[i], ref_kept[i])
        assert lm[i].shape == ref_feats[i].shape
        assert torch.allclose(lm[i], ref_feats[i], atol=1e-5), (lm[i] - ref_feats[i]).abs().max()


def test_original_positions_and_other_architectures_are_refused():
    model, proc = T.llava()
    with pytest.raises(TypeError, match="positions='compact'"):
        visprune.prune_(model, PruneConfig(scorer="visionzip", k=5, positions="original"))
    assert not visprune.is_pruned(model)
    visprune.prune_(model, PruneConfig(scorer=VisionZipScorer(space="projected"), k=5, positions="original"))
    visprune.unprune_(model)
    qwen, _ = T.qwen2_vl()
    with pytest.raises(TypeError, match='VisionZipScorer\\(space="projected"\\)'):
        visprune.prune_(qwen, PruneConfig(scorer="visionzip", k=5))
    with pytest.raises(TypeError, match="no post-projector variant"):
        visprune.prune_(qwen, PruneConfig(scorer="prumerge"))
    assert not visprune.is_pruned(qwen)
    with pytest.raises(ValueError, match="valid spaces"):
        VisionZipScorer(space="hidden")


@pytest.mark.parametrize("config", [PruneConfig(scorer="visionzip", k=20), PruneConfig(scorer="prumerge+")])
def test_generate_batched_equals_one_by_one(setup, config):
    """Ragged counts of tokens in the scorers' own order (PruMerge+ sends 30 + samples + 1 and 7 + samples + 1)."""
    model, proc, inputs = setup
    imgs = T.images(2, size=(SIZE, SIZE))
    singles = [proc(images=[im], text=[T.prompt(QUESTION)], return_tensors="pt") for im in imgs]
    visprune.prune_(model, config, processor=proc)
    try:
        assert_batched_equals_one_by_one(model, inputs, singles, ragged=config.budget_name == "iqr")
    finally:
        visprune.unprune_(model)


def test_tower_space_needs_the_default_strategy():
    model, _ = T.llava()
    model.config.vision_feature_select_strategy = "full"
    with pytest.raises(TypeError, match="'default'.*space=\"projected\""):
        visprune.prune_(model, PruneConfig(scorer="visionzip", k=5))
    with pytest.raises(TypeError, match="'default'"):
        visprune.prune_(model, PruneConfig(scorer="prumerge"))
    assert not visprune.is_pruned(model)
