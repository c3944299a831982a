"""Every registered scorer x budget on BLIP-2, InstructBLIP (both cuts) and IDEFICS (with and
without resampler): refused with a clear TypeError where it cannot fit, else shapes, counts, no
NaNs and batch-invariance. Kept apart from tests/test_contract.py, whose loop assumes
placeholder-per-token prompts."""

import pytest
import torch
from transformers import CLIPVisionConfig

from visprune import testing as T
import visprune
from visprune import PruneConfig, prune_, unprune_

SETTINGS = {
    "fixed": {"k": 5},
    "ratio": {"keep": 0.3},
    "energy": {"energy": 0.8, "min_keep": 2},
    "iqr": {"min_keep": 2},
}
SETUPS = {
    "blip2-query": (T.blip2, "query"),
    "blip2-vit": (T.blip2, "vit"),
    "instructblip-query": (T.instructblip, "query"),
    "instructblip-vit": (T.instructblip, "vit"),
    "idefics": (lambda: T.idefics(resampler=True), None),
    "idefics-noresampler": (lambda: T.idefics(resampler=False), None),
}
# (setup kind, scorer) pairs refused at prune_ time, and a word the message must contain
REFUSED = {
    "query": {"cls": "lmtext", "atp": "lmtext", "visionzip": "lmtext", "pool": "patch grid", "text": "lmtext"},
    "vit": {"lmtext": "cut='query'", "atp": "cut='query'", "text": "EVA-CLIP"},
    "idefics": {"lmtext": "embedding space"},
}
for _refused in REFUSED.values():  # FastV needs model.model.language_model.layers (LLaVA / Qwen layouts)
    _refused["fastv"] = "in-LLM pruning needs"
GRID_ONLY = {"pool"}
QUESTIONS = ["what colour is the star ?", "how many circle ?", "is there a dog ?"]


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    clip = tmp_path_factory.mktemp("clip_idefics")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=T.IMAGE, patch_size=T.PATCH, projection_dim=16)
    T.clip_model(vision).save_pretrained(clip)
    T.tokenizer().save_pretrained(clip)
    out = {}
    for name, (build, cut) in SETUPS.items():
        model, proc = build()
        out[name] = (model, proc, cut, str(clip))
    return out


def _inputs(proc, cut, imgs, questions):
    if cut is None:
        return proc(text=T.idefics_prompts(imgs, questions), return_tensors="pt", padding=True)
    return proc(images=imgs, text=[T.blip_prompt(q) for q in questions], return_tensors="pt", padding=True)


def _kept(model, proc, cut, imgs, questions):
    model(**_inputs(proc, cut, imgs, questions))
    return visprune.last_selection(model)


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("budget", visprune.list_budgets())
@pytest.mark.parametrize("scorer", visprune.list_scorers())
@torch.no_grad()
def test_every_scorer_and_budget(setups, setup, scorer, budget):
    model, proc, cut, clip = setups[setup]
    cfg = PruneConfig(scorer=scorer, budget=budget, text_encoder=clip if scorer in ("text", "atp") else None,
                      cut=cut, **SETTINGS[budget])
    refused = REFUSED[cut or "idefics"]
    if scorer in refused:
        with pytest.raises(TypeError, match=refused[scorer]):
            prune_(model, cfg, processor=proc)
        assert not visprune.is_pruned(model)
        return
    imgs = T.images(3)
    prune_(model, cfg, processor=proc)
    try:
        sel = _kept(model, proc, cut, imgs, QUESTIONS)
        for i, (kept, feats, prot) in enumerate(zip(sel.kept, sel.encoded.features, sel.encoded.protected)):
            n_cand = int((~prot).sum())
            assert kept.dtype == torch.int64 and kept.dim() == 1
            assert torch.equal(kept, torch.unique(kept)) and int(kept.max()) < feats.shape[0]
            assert prot[kept].sum() == prot.sum()
            n = len(kept) - int(prot.sum())
            assert 1 <= n <= n_cand
            exact = scorer not in GRID_ONLY
            if budget == "fixed":
                assert n == min(5, n_cand) if exact else n <= min(5, n_cand)
            if budget == "ratio":
                assert n == int(n_cand * 0.3 + 0.5) if exact else n <= int(n_cand * 0.3 + 0.5)
            assert torch.isfinite(sel.kept_features[i]).all()
            assert torch.isfinite(sel.scores[i, : feats.shape[0]][~prot]).all()
        for i, q in enumerate(QUESTIONS):
            one = _kept(model, proc, cut, [imgs[i]], [q])
            assert torch.equal(one.kept[0], sel.kept[i]), f"image {i}: batched selection differs from one-by-one"
            assert torch.allclose(one.kept_features[0], sel.kept_features[i], atol=1e-5)
    finally:
        unprune_(model)
