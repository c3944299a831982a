"""Tower-space VisionZip on LLaVA-NeXT against a reference written here from the official
any-resolution code (dvlab-research/VisionZip ``visionzip/clip_encoder.py``
``CLIPVisionTower_VisionZip.forward`` on every crop, ``visionzip/llava_arch.py``
``prepare_inputs_labels_for_multimodal_visionzip`` with ``spatial_unpad`` and
``restore_image_features_sorted``), run on the same tiny LLaVA-NeXT's own tensors: the language
model receives exactly the reference's tokens, in its order, for a batch of three images of
different sizes and crop counts (two of them unpadded by the stock model)."""

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

import visprune
from visprune import PruneConfig
from visprune import testing as T
from visprune.scoring.crops import crop_budgets

from helpers import assert_batched_equals_one_by_one, eager_tower_outputs, pruned_selection

QUESTION = "what colour is the star ?"
# (width, height) and (rows, columns) of the crops after the base: side by side, stacked (the stock
# unpadding drops an edge of each of those), 1 x 1
SIZES, GRIDS = [(90, 56), (56, 90), (56, 56)], [(1, 2), (2, 1), (1, 1)]


@pytest.fixture(scope="module")
def setup():
    model, proc = T.llava_next()
    with torch.no_grad():  # sharper attention than random weights' near-uniform one: no near-ties in the top-k
        for layer in model.model.vision_tower.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    imgs = [T.images(1, size=size, seed=i)[0] for i, size in enumerate(SIZES)]
    inputs = proc(images=[[im] for im in imgs], text=[T.prompt(QUESTION)] * 3, return_tensors="pt", padding=True)
    singles = [proc(images=[[im]], text=[T.prompt(QUESTION)], return_tensors="pt") for im in imgs]
    return model, proc, inputs, singles


@torch.no_grad()
def _tower_reference(model, crops, dominant, contextual):
    """The official CLIPVisionTower_VisionZip.forward on a batch of crops (``visionzip(model, dominant,
    contextual)``), then mm_projector: ``[crops, dominant + contextual, D]`` and ``all_indices``."""
    out = eager_tower_outputs(model, crops)
    layer = model.model.vision_tower.encoder.layers[-2]
    attn, hidden = out.attentions[-2], out.hidden_states[-2]
    b, t, d = hidden.shape
    k = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[-3]))
    metric = k.view(b, t, layer.self_attn.num_heads, -1).mean(2)  # raw_key_states.mean(1)
    dominant_num = dominant - 1
    top = attn[:, :, 0, 1:].sum(1).topk(dominant_num, dim=1).indices + 1
    all_indices = torch.cat([torch.zeros(b, 1, dtype=top.dtype), top], dim=1)
    mask = torch.ones(b, t, dtype=torch.bool).scatter_(1, all_indices, False)
    dominant_tokens = hidden.masked_select(~mask[..., None]).view(b, dominant_num + 1, d)
    metric_f = metric[mask].view(b, t - dominant_num - 1, -1)
    hidden_f = hidden.masked_select(mask[..., None]).view(b, t - dominant_num - 1, d)
    metric_n = metric_f / metric_f.norm(dim=-1, keepdim=True)
    step = max(1, metric_n.shape[1] // contextual)
    target = torch.arange(0, metric_n.shape[1], step)[:contextual]
    others = ~torch.isin(torch.arange(metric_n.shape[1]), target)
    similarity = torch.bmm(metric_n[:, others], metric_n[:, target].transpose(1, 2))
    one_hot = F.one_hot(similarity.argmax(2), contextual).to(hidden.dtype)
    counts = one_hot.sum(1).clamp(min=1)[..., None]
    contextual_tokens = hidden_f[:, target] + torch.bmm(one_hot.transpose(1, 2), hidden_f[:, others]) / counts
    rest = mask[:, 1:].nonzero()[:, 1].view(b, -1)  # the filtered patches' indices, for the targets' places
    feats = model.model.multi_modal_projector(torch.cat([dominant_tokens, contextual_tokens], dim=1))
    return feats, all_indices, rest[:, target]


def _restore(model, feats, keep_idx, width, height):
    """The official restore_image_features_sorted, its 576 / 24 the tower's patch count and side."""
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    n, total, d = feats.shape
    num_keep = keep_idx.shape[1]
    restore = keep_idx.sort(dim=1).values[:, 1:] - 1
    restored = torch.zeros(n, side * side, d)
    mask = torch.zeros(n, side * side, dtype=torch.bool).scatter_(1, restore, True)
    restored[mask] = feats[:, 1:num_keep].reshape(-1, d)
    restored = restored.view(height, width, side, side, d).permute(0, 2, 1, 3, 4).reshape(height * side, width * side, d)
    mask = mask.view(height, width, side, side).permute(0, 2, 1, 3).reshape(height * side, width * side)
    return torch.cat([restored[mask], feats[:, 0], feats[:, num_keep:].reshape(-1, d)])


@torch.no_grad()
def _reference(model, inputs, k):
    """Per image: its visual tokens as the official LLaVA-NeXT path sends them (``k`` split over the
    image's crops, each crop ``dominant, contextual`` of its share), and the packed positions of the
    dominant patches and targets (the stock sequence's, from the model's own ``pack_image_features``)."""
    cfg = model.config
    tokens, places = [], []
    for pixels, size, (height, width) in zip(inputs["pixel_values"], inputs["image_sizes"], GRIDS):
        n = image_size_to_num_patches(size, cfg.image_grid_pinpoints, cfg.vision_config.image_size)
        (share,) = set(crop_budgets(k, [16] * n))  # one share each: the official code's one count for all crops
        contextual = round(share * 10 / 64)
        feats, keep_idx, targets = _tower_reference(model, pixels[:n], share - contextual, contextual)
        if n > 1:
            tokens.append(torch.cat([feats[0], _restore(model, feats[1:], keep_idx[1:], width, height)]))
        else:
            tokens.append(torch.cat([feats[0], model.model.image_newline[None]]))
        ids = torch.arange(n * 16, dtype=torch.float).view(n, 16, 1)  # each patch's number, packed as the model packs
        (packed,), _ = model.model.pack_image_features([ids], size[None], "default", torch.tensor([-1.0]))
        chosen = torch.cat([keep_idx[:, 1:] - 1, targets], dim=1) + torch.arange(n)[:, None] * 16
        places.append(torch.isin(packed[:, 0], chosen.flatten().float()).nonzero().flatten())
        places[-1] = torch.cat([places[-1], (packed[:, 0] == -1).nonzero().flatten()]).sort().values  # + newlines
    return tokens, places


@torch.no_grad()
def _lm_image_tokens(model, proc, inputs, config):
    """Prune, one forward: the selection and each row's image tokens as the language model received them."""
    seen = {}

    def ids(_m, args, kw):
        seen["ids"] = args[0] if args else kw["input_ids"]

    def embeds(_m, _args, kw):
        seen["embeds"] = kw["inputs_embeds"]

    hooks = [model.model.register_forward_pre_hook(ids, with_kwargs=True),
             model.model.language_model.register_forward_pre_hook(embeds, with_kwargs=True)]
    sel = pruned_selection(model, proc, inputs, config, hooks=hooks)
    image = seen["ids"] == model.config.image_token_id
    return sel, [seen["embeds"][i][image[i]] for i in range(len(image))]


@pytest.mark.parametrize("k", [24, 30])  # 8 / 10 per crop of the 3-crop images, 12 / 15 per crop of the 2-crop one
def test_visionzip_on_llava_next_equals_the_official_code(setup, k):
    model, proc, inputs, _ = setup
    ref_tokens, ref_places = _reference(model, inputs, k)
    sel, lm = _lm_image_tokens(model, proc, inputs, PruneConfig(scorer="visionzip", k=k))
    assert sel.sent == [len(t) for t in ref_tokens] == [k, k, k]
    for i in range(3):
        assert torch.equal(sel.kept[i], ref_places[i])
        assert torch.allclose(lm[i], ref_tokens[i], atol=1e-5), (lm[i] - ref_tokens[i]).abs().max()


def test_undo_and_batched_equals_one_by_one(setup):
    model, proc, inputs, singles = setup
    with torch.no_grad():
        ref = model(**inputs).logits
    visprune.prune_(model, PruneConfig(scorer="visionzip", keep=0.5), processor=proc)
    try:
        with torch.no_grad():
            model(**inputs)
        assert visprune.last_selection(model).sent == [20, 20, 16]  # half of each image's stock count: ragged
        assert_batched_equals_one_by_one(model, inputs, singles)
    finally:
        visprune.unprune_(model)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, ref)


def test_official_default_split_and_refusals():
    # the README's dominant=54, contextual=10 on every crop of a base + 2 x 2 image: k = 5 * 64
    assert crop_budgets(320, [576] * 5) == [64] * 5 and round(64 * 10 / 64) == 10
    model, _ = T.llava_next()
    model.config.vision_feature_select_strategy = "full"
    with pytest.raises(TypeError, match="'default'.*space=\"projected\""):
        visprune.prune_(model, PruneConfig(scorer="visionzip", k=20))
    model.config.vision_feature_select_strategy = "default"
    model.config.vision_feature_layer = [-2, -1]
    with pytest.raises(TypeError, match="several layers.*space=\"projected\""):
        visprune.prune_(model, PruneConfig(scorer="visionzip", k=20))
    with pytest.raises(TypeError, match="no post-projector variant"):
        visprune.prune_(model, PruneConfig(scorer="prumerge"))
    assert not visprune.is_pruned(model)
    for build in (T.llava_onevision, T.llava_next_video):
        other, _ = build()
        with pytest.raises(TypeError, match='llava_next.*VisionZipScorer\\(space="projected"\\)'):
            visprune.prune_(other, PruneConfig(scorer="visionzip", k=20))
