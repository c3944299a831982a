"""Every registered scorer x budget on every set-up of the case table (tests/cases.py): refused at
``prune_`` time with a clear ``TypeError`` where it cannot fit (or, where it fits the model's videos only,
each call with images refused with a ``UsageError``), else shapes, counts, protected tokens,
no NaNs, and the batched selection equal to the one-by-one one."""

import pytest
import torch
from transformers import CLIPVisionConfig

import visprune
from visprune import prune_, unprune_
from visprune import testing as T
from visprune.errors import UsageError
from visprune.scoring.scorers import VisionZipScorer

from cases import CASES, QUESTIONS

SETTINGS = {
    "fixed": {"k": 5},
    "ratio": {"keep": 0.3},
    "energy": {"energy": 0.8, "min_keep": 2},
    "iqr": {"min_keep": 2},
}
GRID_ONLY = {"pool"}  # pooling keeps the largest grid of at most k cells: at most, not exactly, k
AT_LEAST = {"prumerge+"}  # k outliers plus spatial samples
# tower-space VisionZip: the LM receives k tokens, [CLS] among them (one per crop on LLaVA-NeXT); `kept` lists the
# patches among them that have a place in the stock token sequence (and LLaVA-NeXT's newlines)
SENT_IS_K = {"visionzip"}
# registered names, and scorers whose variants are constructor settings
SCORERS = {**{name: name for name in visprune.list_scorers()},
           "visionzip-projected": VisionZipScorer(space="projected")}
TEXT_AWARE = ("text", "atp", "cdpruner")  # given the set-up's CLIP partner (cdpruner: its relevance, as ATP's)


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    shared = tmp_path_factory.mktemp("clip_shared")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=T.IMAGE, patch_size=T.PATCH, projection_dim=16)
    T.clip_model(vision).save_pretrained(shared)
    T.tokenizer().save_pretrained(shared)
    out = {}
    for name, case in CASES.items():
        model, proc = case.build()
        clip = str(shared) if case.clip == "shared" else None
        if case.clip == "own":  # a CLIP text partner sharing this tower's space
            clip = tmp_path_factory.mktemp(f"clip_{name}")
            T.clip_model(model.config.vision_config).save_pretrained(clip)
            T.tokenizer().save_pretrained(clip)
        out[name] = (case, model, proc, T.images(3, size=case.image_size), clip and str(clip))
    return out


def _selection(case, model, proc, imgs, questions):
    model(**case.inputs(proc, imgs, questions))
    return visprune.last_selection(model)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("budget", visprune.list_budgets())
@pytest.mark.parametrize("scorer", list(SCORERS))
@torch.no_grad()
def test_every_scorer_and_budget(setups, name, scorer, budget):
    case, model, proc, imgs, clip = setups[name]
    scorer_arg = SCORERS[scorer]
    if scorer == "text" and clip is None:
        pytest.skip("no CLIP text encoder shares this tower's space (SigLIP, Qwen)")
    extra = {"llm_layer": 1} if scorer in ("fastv", "dart") else {}  # the tiny language models have 2 layers
    cfg = case.prune_config(scorer=scorer_arg, budget=budget, text_encoder=clip if scorer in TEXT_AWARE else None,
                            **SETTINGS[budget], **extra)
    if scorer in case.refused:
        with pytest.raises(TypeError, match=case.refused[scorer]):
            prune_(model, cfg, processor=proc)
        assert not visprune.is_pruned(model)
        return
    prune_(model, cfg, processor=proc)
    try:
        if scorer in case.call_refused:
            with pytest.raises(UsageError, match=case.call_refused[scorer]):
                _selection(case, model, proc, imgs, QUESTIONS)
            return
        sel = _selection(case, model, proc, imgs, QUESTIONS)
        for i, (kept, feats, prot) in enumerate(zip(sel.kept, sel.encoded.features, sel.encoded.protected)):
            n_cand = int((~prot).sum())
            assert kept.dtype == torch.int64 and kept.dim() == 1
            assert torch.equal(kept, torch.unique(kept)) and int(kept.max()) < feats.shape[0]
            assert prot[kept].sum() == prot.sum()  # protected tokens always kept
            n = sel.sent[i] if scorer in SENT_IS_K else len(kept) - int(prot.sum())
            assert 1 <= n <= n_cand
            assert sel.sent[i] == len(sel.kept_features[i]) <= feats.shape[0]
            for want in [min(5, n_cand)] * (budget == "fixed") + [int(n_cand * 0.3 + 0.5)] * (budget == "ratio"):
                assert n <= want if scorer in GRID_ONLY else n >= want if scorer in AT_LEAST else n == want
            assert torch.isfinite(sel.kept_features[i]).all()
            assert torch.isfinite(sel.scores[i, : feats.shape[0]][~prot]).all()
        for i, q in enumerate(QUESTIONS):
            one = _selection(case, model, proc, [imgs[i]], [q])
            assert torch.equal(one.kept[0], sel.kept[i]), f"image {i}: batched selection differs from one-by-one"
            assert torch.allclose(one.kept_features[0], sel.kept_features[i], atol=1e-5)
    finally:
        unprune_(model)
