"""Every registered scorer x budget on every adapter: shapes, counts, no NaNs, batch-invariance."""

import pytest
import torch

from visprune import testing as T
import visprune
from visprune import PruneConfig, prune_, unprune_

SETTINGS = {
    "fixed": {"k": 5},
    "ratio": {"keep": 0.3},
    "energy": {"energy": 0.8, "min_keep": 2},
    "iqr": {"min_keep": 2},
}
# Scorers that need one patch grid per image refuse packed any-resolution features at prune_ time.
GRID_ONLY = {"pool"}
PACKED = {"llava_next", "llava_onevision"}
QWEN = {"qwen2_vl": T.qwen2_vl, "qwen2_5_vl": T.qwen2_5_vl}
ARCHS = [*T.BUILDERS, *QWEN]


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    out = {}
    for arch in ARCHS:
        model, proc = {**T.BUILDERS, **QWEN}[arch]()
        size = (T.IMAGE, T.IMAGE) if arch == "llava" else (112, 168) if arch in QWEN else (T.IMAGE, 2 * T.IMAGE)
        clip = None
        if arch in ("llava", "llava_next"):  # SigLIP and Qwen towers have no CLIP text partner
            clip = tmp_path_factory.mktemp(f"clip_{arch}")
            T.clip_model(model.config.vision_config).save_pretrained(clip)
            T.tokenizer().save_pretrained(clip)
        out[arch] = (model, proc, T.images(3, size=size), str(clip) if clip else None)
    return out


def _kept(model, proc, imgs, questions):
    template = T.qwen_prompt if isinstance(proc, T.QwenInputs) else T.prompt
    inputs = proc(images=imgs, text=[template(q) for q in questions], return_tensors="pt", padding=True)
    model(**inputs)
    sel = visprune.last_selection(model)
    return sel


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("budget", visprune.list_budgets())
@pytest.mark.parametrize("scorer", visprune.list_scorers())
@torch.no_grad()
def test_every_scorer_and_budget(setups, arch, scorer, budget):
    model, proc, imgs, clip = setups[arch]
    if scorer == "text" and clip is None:
        pytest.skip("no CLIP text encoder shares a SigLIP or Qwen tower's space")
    extra = {"llm_layer": 1} if scorer == "fastv" else {}  # the tiny language models have 2 layers
    cfg = PruneConfig(scorer=scorer, budget=budget, text_encoder=clip if scorer in ("text", "atp") else None,
                      **SETTINGS[budget], **extra)
    questions = ["what colour is the star ?", "how many circle ?", "is there a dog ?"]
    if scorer in GRID_ONLY and arch in PACKED:
        with pytest.raises(TypeError, match="one patch grid"):
            prune_(model, cfg, processor=proc)
        assert not visprune.is_pruned(model)
        return
    prune_(model, cfg, processor=proc)
    try:
        sel = _kept(model, proc, imgs, questions)
        for i, (kept, feats, prot) in enumerate(zip(sel.kept, sel.encoded.features, sel.encoded.protected)):
            n_cand = int((~prot).sum())
            assert kept.dtype == torch.int64 and kept.dim() == 1
            assert torch.equal(kept, torch.unique(kept)) and int(kept.max()) < feats.shape[0]
            assert prot[kept].sum() == prot.sum()  # protected tokens always kept
            n = len(kept) - int(prot.sum())
            assert 1 <= n <= n_cand
            exact = scorer not in GRID_ONLY  # pooling keeps the largest grid of at most k cells
            if budget == "fixed":
                assert n == min(5, n_cand) if exact else n <= min(5, n_cand)
            if budget == "ratio":
                assert n == int(n_cand * 0.3 + 0.5) if exact else n <= int(n_cand * 0.3 + 0.5)
            assert torch.isfinite(sel.kept_features[i]).all()
            assert torch.isfinite(sel.scores[i, : feats.shape[0]][~prot]).all()
        for i, q in enumerate(questions):
            one = _kept(model, proc, [imgs[i]], [q])
            assert torch.equal(one.kept[0], sel.kept[i]), f"image {i}: batched selection differs from one-by-one"
            assert torch.allclose(one.kept_features[0], sel.kept_features[i], atol=1e-5)
    finally:
        unprune_(model)
