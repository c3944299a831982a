"""CDPruner and VisPruner against independent references written from the published algorithms.

CDPruner's reference picks, at each step, the token whose addition gives the largest log-determinant
of the kernel restricted to the chosen set (NumPy ``slogdet`` in float64, no Cholesky updates);
VisPruner's follows the official loop with plain Python lists. Both run on the same tensors as the
scorers: hand-made score contexts and the selections of a tiny random LLaVA, with ragged per-image
budgets.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import visprune
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T
from visprune.apps.cli import main
from visprune.methods import parse_method
from visprune.scoring.budgets import Budget
from visprune.scoring.crops import crop_budgets
from visprune.scoring.context import ScoreContext
from visprune.scoring.scorers import CDPrunerScorer, ClipTextScorer, VisPrunerScorer

from helpers import eager_tower_outputs

QUESTIONS = ["what colour is the star ?", "how many circle ?"]


class GivenBudget(Budget):
    """Per-image budgets given in the test (ragged, by position in the call)."""

    name = "given_test"

    def __init__(self, ks):
        self.ks = ks

    def __call__(self, ctx, scores):
        return torch.tensor(self.ks[: ctx.valid.shape[0]])


# --- references ---------------------------------------------------------------------------------

def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def lmtext_reference(x, e):
    """lmtext's relevance (numpy): each question token's cosine similarities standardised over the
    candidate tokens ``x`` (population std), then the max over question tokens."""
    c = _unit(x) @ _unit(e).T
    return ((c - c.mean(0)) / (c.std(0) + 1e-6)).max(-1)


def cdpruner_relevance_reference(raw):
    """The official normalisation: ``(r - min + 1e-6) / (max - min)``."""
    raw = np.asarray(raw, dtype=np.float64)
    return (raw - raw.min() + 1e-6) / (raw.max() - raw.min())


def dpp_greedy_reference(features, relevance, k):
    """Greedy MAP of the DPP with kernel ``diag(r) S diag(r)``: largest log-det gain first, by slogdet."""
    f = _unit(features)
    r = np.asarray(relevance, dtype=np.float64)
    kernel = r[:, None] * (f @ f.T) * r[None, :]
    chosen = []
    for _ in range(k):
        best, best_gain = None, -np.inf
        for j in range(len(r)):
            if j in chosen:
                continue
            sub = kernel[np.ix_(chosen + [j], chosen + [j])]
            sign, logdet = np.linalg.slogdet(sub)
            gain = logdet if sign > 0 else -np.inf
            if gain > best_gain:  # strict: ties keep the lower index
                best, best_gain = j, gain
        chosen.append(best)
    return sorted(chosen)


def vispruner_reference(features, attention, k, ratio=0.5):
    """Important tokens by attention, then rounds of at most 8: drop the even-place tokens most
    similar to an odd-place one, until ``k`` are left."""
    f = _unit(features)
    att = [float(a) for a in attention]
    order = sorted(range(len(att)), key=lambda i: (-att[i], i))
    n_imp = int(k * ratio)
    important, rest = order[:n_imp], order[n_imp:]
    n_div = k - n_imp
    if n_div == 0:
        return sorted(important)
    while len(rest) > n_div:
        drop = min(8, len(rest) - n_div)
        a, b = rest[0::2], rest[1::2]
        dup = [max(float(f[i] @ f[j]) for j in b) for i in a]
        ranked = sorted(range(len(a)), key=lambda p: (-dup[p], p))
        rest = [a[p] for p in ranked[drop:]] + b
    return sorted(important + rest)


def _ctx(features, valid=None, protected=None, **kw):
    i, n, _ = features.shape
    return ScoreContext(
        features=features,
        valid=torch.ones(i, n, dtype=torch.bool) if valid is None else valid,
        protected=torch.zeros(i, n, dtype=torch.bool) if protected is None else protected,
        config=kw.pop("config", PruneConfig()),
        **kw,
    )


# --- CDPruner -----------------------------------------------------------------------------------

def test_cdpruner_equals_log_det_greedy_on_ragged_images():
    """Two images of different lengths in one padded context, a protected token, ragged k; the
    weight-free relevance (lmtext: standardised cosine to the question's embeddings)."""
    g = torch.Generator().manual_seed(0)
    n, d = 30, 48  # width above the token count: the kernel has full rank
    feats = torch.randn(2, n, d, generator=g)
    valid = torch.ones(2, n, dtype=torch.bool)
    valid[1, 24:] = False  # image 1 has 24 tokens
    protected = torch.zeros(2, n, dtype=torch.bool)
    protected[0, 0] = True  # e.g. a [CLS] token fed to the language model
    embeds = [torch.randn(5, d, generator=g), torch.randn(3, d, generator=g)]
    ctx = _ctx(feats, valid, protected, question_embeds=embeds)
    scorer = CDPrunerScorer()
    scores = scorer(ctx)
    kept = scorer.select(ctx, scores, torch.tensor([9, 13]))
    for i, k in enumerate([9, 13]):
        cand = (valid[i] & ~protected[i]).nonzero(as_tuple=True)[0].numpy()
        x = feats[i].numpy()[cand]
        raw = lmtext_reference(x, embeds[i].numpy())
        rel = cdpruner_relevance_reference(raw)
        assert np.allclose(scores[i].numpy()[cand], rel, rtol=1e-5, atol=1e-6)
        assert kept[i].tolist() == [int(cand[j]) for j in dpp_greedy_reference(x, rel, k)]
        assert scores[i][~(valid[i] & ~protected[i])].eq(0).all()


def test_cdpruner_negates_clip_relevance_and_theta_is_off_by_default():
    """With a CLIP text tower the official code ranks by the negated patch-question similarity."""

    class GivenClip(ClipTextScorer):  # a CLIP relevance with given cosines (no weights)
        def __init__(self, cos):
            self.cos = cos

        def __call__(self, ctx):
            return self.cos

    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 20, 32, generator=g)
    cos = torch.rand(1, 20, generator=g) * 2 - 1
    ctx = _ctx(feats)
    scorer = CDPrunerScorer()
    scorer.relevance = GivenClip(cos)
    rel = cdpruner_relevance_reference(-cos[0].numpy())
    assert np.allclose(scorer(ctx)[0].numpy(), rel, rtol=1e-5, atol=1e-6)
    assert scorer.select(ctx, scorer(ctx), torch.tensor([7]))[0].tolist() == dpp_greedy_reference(feats[0], rel, 7)
    sharp = CDPrunerScorer(theta=0.5)  # the official code's commented-out variant: exp(theta / (2 (1 - theta)) r)
    sharp.relevance = GivenClip(cos)
    assert np.allclose(sharp(ctx)[0].numpy(), np.exp(0.5 * rel), rtol=1e-5)
    with pytest.raises(ValueError, match="theta"):
        CDPrunerScorer(theta=1.0)


def test_cdpruner_meets_budgets_beyond_the_kernel_rank():
    """Width 4, 12 tokens, k = 10: the greedy exhausts the kernel and still returns k distinct tokens."""
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 12, 4, generator=g)
    ctx = _ctx(feats, question_embeds=[torch.randn(2, 4, generator=g) for _ in range(2)])
    scorer = CDPrunerScorer()
    kept = scorer.select(ctx, scorer(ctx), torch.tensor([10, 12]))
    assert [len(torch.unique(k)) for k in kept] == [10, 12] and kept[1].tolist() == list(range(12))
    # the first picks, while the kernel still has rank, are the log-det greedy's
    ref = dpp_greedy_reference(feats[0], scorer(ctx)[0].numpy(), 4)
    assert set(ref) <= set(kept[0].tolist())


@pytest.fixture(scope="module")
def llava_with_clip(tmp_path_factory):
    model, proc = T.llava()
    path = tmp_path_factory.mktemp("clip")
    T.clip_model(model.config.vision_config).save_pretrained(path)
    T.tokenizer().save_pretrained(path)
    return model, proc, str(path)


def noise_images(n, size):
    """Random-pixel images: no two patches alike, so no similarity ties for float noise to break
    (the shapes images' flat background gives near-identical tower states)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _run(model, proc, cfg, images=None):
    inputs = proc(images=T.images(2) if images is None else images, text=[T.prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    prune_(model, cfg, processor=proc)
    try:
        model(**inputs)
        return visprune.last_selection(model), inputs
    finally:
        unprune_(model)


@torch.no_grad()
def cdpruner_clip_relevance_reference(model, clip_dir, pixel_values, questions, layer):
    """The official CLIPVisionTower.forward / encode_images relevance: the patches of
    ``hidden_states[layer]`` ([CLS] dropped: select_feature='patch') through CLIP's post_layernorm and
    visual_projection, cosine to the question's text_embeds, negated, min-max per image."""
    from transformers import AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)
    hidden = eager_tower_outputs(model, pixel_values).hidden_states[layer][:, 1:]
    patches = clip.visual_projection(clip.vision_model.post_layernorm(hidden)).numpy()
    text = clip.get_text_features(**tok(questions, return_tensors="pt", padding=True)).pooler_output.numpy()
    return [cdpruner_relevance_reference(-(_unit(p) @ _unit(t))) for p, t in zip(patches, text)]


@pytest.mark.parametrize("feature_layer", [-2, -3, 2])
@torch.no_grad()
def test_cdpruner_on_llava_with_its_clip_partner(llava_with_clip, feature_layer):
    """By default the CLIP relevance reads the layer the model projects (the official code's
    ``mm_vision_select_layer``: LLaVA-1.5's -2), whatever the model's ``vision_feature_layer`` is;
    the kept tokens are the greedy DPP's on the tokens LLaVA's language model receives."""
    model, proc, clip_dir = llava_with_clip
    ks = [5, 8]
    saved = model.config.vision_feature_layer
    model.config.vision_feature_layer = feature_layer
    try:
        sel, inputs = _run(model, proc, PruneConfig(scorer="cdpruner", budget=GivenBudget(ks), text_encoder=clip_dir))
    finally:
        model.config.vision_feature_layer = saved
    assert sel.relevance == f"clip:{clip_dir}" and sel.questions == QUESTIONS
    rels = cdpruner_clip_relevance_reference(model, clip_dir, inputs["pixel_values"], QUESTIONS, feature_layer)
    for i, (k, rel) in enumerate(zip(ks, rels)):
        assert np.allclose(sel.scores[i].numpy(), rel, rtol=1e-4, atol=1e-5)
        assert sel.kept[i].tolist() == dpp_greedy_reference(sel.encoded.features[i].numpy(), rel, k)


@torch.no_grad()
def test_cdpruner_relevance_layer_text_layer_keeps_the_text_scorers_layer(llava_with_clip):
    """``relevance_layer='text_layer'`` (visprune's earlier default): ``PruneConfig.text_layer``, -1 unless given."""
    model, proc, clip_dir = llava_with_clip
    ks = [6, 3]
    for text_layer in (-1, -3):
        scorer = CDPrunerScorer(relevance_layer="text_layer")
        sel, inputs = _run(model, proc, PruneConfig(scorer=scorer, budget=GivenBudget(ks), text_encoder=clip_dir,
                                                    text_layer=text_layer))
        rels = cdpruner_clip_relevance_reference(model, clip_dir, inputs["pixel_values"], QUESTIONS, text_layer)
        for i, (k, rel) in enumerate(zip(ks, rels)):
            assert np.allclose(sel.scores[i].numpy(), rel, rtol=1e-4, atol=1e-5)
            assert sel.kept[i].tolist() == dpp_greedy_reference(sel.encoded.features[i].numpy(), rel, k)
    with pytest.raises(ValueError, match="relevance_layer=text_layer"):  # text_layer would do nothing by default
        prune_(model, PruneConfig(scorer="cdpruner", k=4, text_encoder=clip_dir, text_layer=-3), processor=proc)
    assert not visprune.is_pruned(model)
    with pytest.raises(ValueError, match="relevance_layer"):
        CDPrunerScorer(relevance_layer="last")


@torch.no_grad()
def test_cdpruner_on_llava_without_clip_uses_lmtext():
    model, proc = T.llava()
    ks = [7, 4]
    sel, _ = _run(model, proc, PruneConfig(scorer="cdpruner", budget=GivenBudget(ks)))
    assert sel.relevance == "lmtext"
    emb = model.get_input_embeddings()
    for i, k in enumerate(ks):
        ids = torch.tensor(proc.tokenizer(QUESTIONS[i], add_special_tokens=False)["input_ids"])
        feats = sel.encoded.features[i].numpy()
        rel = cdpruner_relevance_reference(lmtext_reference(feats, emb(ids).numpy()))
        assert np.allclose(sel.scores[i].numpy(), rel, rtol=1e-4, atol=1e-5)
        assert sel.kept[i].tolist() == dpp_greedy_reference(feats, rel, k)


# --- VisPruner ----------------------------------------------------------------------------------

@pytest.mark.parametrize("ks, ratio", [([10, 25], 0.5), ([1, 7], 0.5), ([12, 3], 0.75), ([6, 9], 0.0), ([6, 9], 1.0)])
def test_vispruner_equals_reference(ks, ratio):
    g = torch.Generator().manual_seed(3)
    n, d = 60, 16
    feats = torch.randn(2, n, d, generator=g)
    att = torch.rand(2, n, generator=g)
    valid = torch.ones(2, n, dtype=torch.bool)
    valid[1, 45:] = False
    protected = torch.zeros(2, n, dtype=torch.bool)
    protected[1, 3] = True
    ctx = _ctx(feats, valid, protected, saliency=att)
    scorer = VisPrunerScorer(important_ratio=ratio)
    kept = scorer.select(ctx, scorer(ctx), torch.tensor(ks))
    for i, k in enumerate(ks):
        cand = (valid[i] & ~protected[i]).nonzero(as_tuple=True)[0].numpy()
        ref = vispruner_reference(feats[i].numpy()[cand], att[i].numpy()[cand], k, ratio)
        assert kept[i].tolist() == [int(cand[j]) for j in ref]
    if ratio == 1.0:  # attention only: the top-k of the saliency
        assert kept[0].tolist() == sorted(torch.topk(att[0], ks[0]).indices.tolist())


def test_vispruner_default_split_is_the_official_half():
    assert VisPrunerScorer().important_ratio == 0.5
    with pytest.raises(ValueError, match="important_ratio"):
        VisPrunerScorer(important_ratio=1.5)


@torch.no_grad()
def vispruner_official_reference(model, pixel_values, k, ratio=0.5, layer=-2):
    """The official VisPruner (Theia-4869/VisPruner ``llava_arch.py`` ``encode_images`` with
    ``clip_encoder.py`` ``feature_select``) on one tiny LLaVA's eager tower outputs: attention
    ``attentions[layer][:, :, 0, 1:]`` averaged over heads, features ``hidden_states[layer][:, 1:]``
    (before the projector) L2-normalised, and the official removal loop, image by image."""
    out = eager_tower_outputs(model, pixel_values)
    attention = out.attentions[layer][:, :, 0, 1:].mean(1)
    features = out.hidden_states[layer][:, 1:]
    kept = []
    for att, feat in zip(attention, features):
        n_imp = int(k * ratio)
        n_div = k - n_imp
        order = sorted(range(len(att)), key=lambda j: (-float(att[j]), j))
        important, residual = order[:n_imp], order[n_imp:]
        unit = feat / feat.norm(dim=-1, keepdim=True)
        while n_div > 0:
            r = min(8, len(residual) - n_div)
            if r <= 0:
                break
            a, b = residual[0::2], residual[1::2]
            scores = [max(float(unit[i] @ unit[j]) for j in b) for i in a]
            distinct = sorted(range(len(a)), key=lambda p: (-scores[p], p))[r:]
            residual = [a[p] for p in distinct] + b
        kept.append(sorted(important + (residual if n_div > 0 else [])))
    return kept


SIZE = 168  # 12 x 12 = 144 patches: several removal rounds


@pytest.fixture(scope="module")
def llava144():
    model, proc = T.llava(image=SIZE)
    return model, proc, noise_images(2, SIZE)


@pytest.mark.parametrize("k, ratio", [(9, 0.5), (4, 0.5), (40, 0.5), (64, 0.5), (24, 0.75), (17, 0.0)])
@torch.no_grad()
def test_vispruner_on_llava_equals_the_official_algorithm(llava144, k, ratio):
    """Default: duplicates compared in the tower's feature-layer hidden states before the projector."""
    model, proc, images = llava144
    sel, inputs = _run(model, proc, PruneConfig(scorer=VisPrunerScorer(important_ratio=ratio), k=k), images)
    assert sel.relevance is None
    ref = vispruner_official_reference(model, inputs["pixel_values"], k, ratio)
    out = eager_tower_outputs(model, inputs["pixel_values"])
    for i in range(2):
        assert np.allclose(sel.scores[i].numpy(), out.attentions[-2][i, :, 0, 1:].mean(0).numpy(), atol=1e-5)
        assert sel.kept[i].tolist() == ref[i]


@torch.no_grad()
def test_vispruner_space_projected_compares_the_tokens_the_language_model_receives(llava144):
    """``space='projected'`` (visprune's earlier default): the same loop on the projected tokens,
    which here keeps other tokens than the official comparison."""
    model, proc, images = llava144
    ks = [40, 24]
    sel, inputs = _run(model, proc, PruneConfig(scorer=VisPrunerScorer(space="projected"), budget=GivenBudget(ks)), images)
    cls, _ = _run(model, proc, PruneConfig(scorer="cls", k=3), images)
    official, _ = _run(model, proc, PruneConfig(scorer="vispruner", budget=GivenBudget(ks)), images)
    for i, k in enumerate(ks):
        assert torch.equal(sel.scores[i], cls.scores[i])  # the [CLS] attention of the cls scorer
        ref = vispruner_reference(sel.encoded.features[i].numpy(), sel.scores[i].numpy(), k)
        assert sel.kept[i].tolist() == ref
        assert official.kept[i].tolist() != ref
    with pytest.raises(ValueError, match="space"):
        VisPrunerScorer(space="clip")


# --- by name on the command line ----------------------------------------------------------------

def test_visprune_eval_runs_both_by_name(tmp_path, capsys):
    path = tmp_path / "llava"
    model, proc = T.llava()
    model.save_pretrained(path)
    proc.save_pretrained(path)
    methods = ["cdpruner:keep=0.5", "vispruner:k=6"]
    argv = ["eval", "--model", str(path), "--task", "shapes-vqa", "--n", "2", "--quiet", "--timing", "0",
            "--out", str(tmp_path / "out")]
    for m in methods:
        argv += ["--method", m]
    assert main(argv) == 0, capsys.readouterr().err
    rows = {r["method"]: r for r in json.loads((tmp_path / "out" / "summary.json").read_text())["methods"]}
    assert rows["cdpruner:keep=0.5"]["config"]["scorer"] == "cdpruner"
    assert rows["cdpruner:keep=0.5"]["relevance"] == "lmtext"  # the folder ships no CLIP
    assert rows["vispruner:k=6"]["kept_tokens"] == {"mean": 6, "min": 6, "max": 6}
    assert rows["vispruner:k=6"]["relevance"] is None


@pytest.mark.parametrize("spec, options", [("cdpruner:k=8,relevance_layer=text_layer", {"relevance_layer": "text_layer"}),
                                           ("vispruner:k=8,space=projected", {"space": "projected"}),
                                           ("cdpruner:k=8", {}), ("vispruner:k=8", {})])
def test_the_earlier_defaults_are_named_settings(spec, options):
    from visprune.methods import parse_method

    cfg = parse_method(spec).config
    assert cfg.to_dict().get("scorer_options", {}) == options
    assert PruneConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_feature_layer_is_the_models_own():
    """The layer CDPruner's CLIP relevance and VisPruner's similarity read: the config's
    ``vision_feature_layer`` (the deepest of a list), None where the config names none."""
    from types import SimpleNamespace

    from visprune.scoring.scorers.base import feature_layer

    assert feature_layer(T.llava()[0]) == -2
    vision = SimpleNamespace(num_hidden_layers=24)
    assert feature_layer(SimpleNamespace(config=SimpleNamespace(vision_feature_layer=[-24, -5, 12, 3],
                                                                vision_config=vision))) == -5
    assert feature_layer(SimpleNamespace(config=SimpleNamespace(vision_feature_layer=[3, 20, -23],
                                                                vision_config=vision))) == 20
    assert feature_layer(SimpleNamespace(config=SimpleNamespace())) is None  # IDEFICS, Qwen2-VL, BLIP-2


# --- the official code's long questions and LLaVA-NeXT crops ----------------------------------------

LONG = " ".join(["what colour is the big red star left of the small blue circle ?"] * 12)  # 168 words


@pytest.fixture(scope="module")
def llava_with_clip_bos_eos(tmp_path_factory):
    """A CLIP partner whose tokenizer adds BOS and EOS, as CLIP's does (the tiny one adds neither)."""
    from tokenizers import processors

    model, proc = T.llava()
    path = tmp_path_factory.mktemp("clip_bos_eos")
    T.clip_model(model.config.vision_config).save_pretrained(path)
    tok = T.tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)])
    tok.save_pretrained(path)
    return model, proc, str(path)


@torch.no_grad()
def test_cdpruner_averages_a_long_questions_similarity_over_its_segments(llava_with_clip_bos_eos):
    """CDPruner's official ``CLIPVisionTower.forward``: the question tokenised once (BOS ... EOS), cut
    into ``max_position_embeddings``-token segments (the last one shorter; each embedded alone here,
    where the official code zero-pads it), and the relevance is the mean over segments of the
    negated similarity. The ``text`` scorer (and so ATP) still truncates."""
    from transformers import AutoTokenizer, CLIPModel

    model, proc, clip_dir = llava_with_clip_bos_eos
    clip = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)
    width = clip.config.text_config.max_position_embeddings
    images = noise_images(1, T.IMAGE)
    inputs = proc(images=images, text=[T.prompt(LONG)], return_tensors="pt")
    k = 5
    sel = {}
    for scorer in ("cdpruner", "text"):
        prune_(model, PruneConfig(scorer=scorer, k=k, text_encoder=clip_dir), processor=proc)
        try:
            model(**inputs)
            sel[scorer] = visprune.last_selection(model)
        finally:
            unprune_(model)
    assert sel["cdpruner"].questions == [LONG]
    ids = tok(LONG)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) > 2 * width
    segments = [ids[s : s + width] for s in range(0, len(ids), width)]
    text = torch.cat([clip.get_text_features(input_ids=torch.tensor([seg])).pooler_output for seg in segments]).numpy()
    hidden = eager_tower_outputs(model, inputs["pixel_values"]).hidden_states[-2][0, 1:]
    patches = _unit(clip.visual_projection(clip.vision_model.post_layernorm(hidden)).numpy())
    sims = patches @ _unit(text).T  # [N, segments]
    rel = cdpruner_relevance_reference((-sims).mean(-1))
    assert np.allclose(sel["cdpruner"].scores[0].numpy(), rel, rtol=1e-4, atol=1e-5)
    assert sel["cdpruner"].kept[0].tolist() == dpp_greedy_reference(sel["cdpruner"].encoded.features[0].numpy(), rel, k)
    assert not np.allclose(rel, cdpruner_relevance_reference(-sims[:, 0]), atol=1e-3)  # truncation differs here
    # the text scorer: the first segment, its last token replaced by EOS (the tokenizer's truncation), at text_layer -1
    short = tok(LONG, truncation=True, max_length=width, return_tensors="pt")
    last = eager_tower_outputs(model, inputs["pixel_values"]).hidden_states[-1][0, 1:]
    cos = _unit(clip.visual_projection(clip.vision_model.post_layernorm(last)).numpy()) @ _unit(
        clip.get_text_features(**short).pooler_output.numpy())[0]
    assert np.allclose(sel["text"].scores[0].numpy(), cos, atol=1e-5)


def llava_next_inputs(proc, image_sizes):
    """Noise images of the given (height, width), one per prompt."""
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in image_sizes]
    return proc(images=images, text=[T.prompt(q) for q in QUESTIONS[: len(images)]], return_tensors="pt", padding=True)


def official_packed_mask(crop_masks, rows, cols, side):
    """The official ``prepare_inputs_labels_for_multimodal`` on index masks (``spatial_unpad``, an
    image that needs no unpadding): the base crop's mask, then the crops' masks laid out as the
    ``rows x cols`` grid they tile, each grid row ended by a kept newline."""
    base, rest = crop_masks[0], crop_masks[1:].reshape(rows, cols, side, side)
    grid = rest.permute(0, 2, 1, 3).reshape(rows * side, cols * side)
    grid = torch.cat([grid, torch.ones(rows * side, 1, dtype=torch.bool)], dim=1)
    return torch.cat([base, grid.flatten()])


@pytest.mark.parametrize("per_crop, ratio", [(6, 0.5), (3, 0.5), (9, 0.75), (5, 0.0)])
@torch.no_grad()
def test_vispruner_on_llava_next_selects_in_each_crop_as_the_official_code(per_crop, ratio):
    """The official LLaVA-NeXT path runs ``encode_images`` on the base image and each crop as
    separate pictures, ``visual_token_num`` each ("32 * 5 = 160"): ``k = per_crop * crops`` here
    keeps the same tokens, on an image (56 x 112, two crops side by side) that unpadding leaves whole."""
    model, proc = T.llava_next()
    inputs = llava_next_inputs(proc, [(T.IMAGE, 2 * T.IMAGE)])
    crops = inputs["pixel_values"].shape[1]
    side = T.IMAGE // T.PATCH
    assert crops == 3
    prune_(model, PruneConfig(scorer=VisPrunerScorer(important_ratio=ratio), k=per_crop * crops), processor=proc)
    try:
        model(**inputs)
        sel = visprune.last_selection(model)
    finally:
        unprune_(model)
    ref = vispruner_official_reference(model, inputs["pixel_values"][0], per_crop, ratio)
    masks = torch.zeros(crops, side * side, dtype=torch.bool)
    for c, kept in enumerate(ref):
        masks[c, kept] = True
    packed = official_packed_mask(masks, 1, 2, side)
    assert len(packed) == sel.encoded.features[0].shape[0]
    assert sel.kept[0].tolist() == packed.nonzero(as_tuple=True)[0].tolist()
    assert sel.encoded.crops[0].tolist() == [0] * side * side + ([1] * side + [2] * side + [-1]) * side


@torch.no_grad()
def test_cdpruner_on_llava_next_selects_in_each_crop():
    """CDPruner's official LLaVA-NeXT path: one DPP per crop (base image first), the relevance
    min-max normalised over the whole image; an image whose crops unpadding shortens keeps ``k``
    all the same (a crop with fewer tokens than its share gives the rest to the others)."""
    model, proc = T.llava_next()
    inputs = llava_next_inputs(proc, [(T.IMAGE, 2 * T.IMAGE), (T.IMAGE, 3 * T.IMAGE)])
    ks = [15, 22]
    prune_(model, PruneConfig(scorer="cdpruner", budget=GivenBudget(ks)), processor=proc)
    try:
        model(**inputs)
        sel = visprune.last_selection(model)
    finally:
        unprune_(model)
    for i, k in enumerate(ks):
        crop = sel.encoded.crops[i]
        feats, rel = sel.encoded.features[i].numpy(), sel.scores[i].numpy()
        numbers = sorted(set(crop.tolist()) - {-1})
        assert numbers == [0, 1, 2]
        shares = crop_budgets(k, [int((crop == c).sum()) for c in numbers])
        expect = []
        for c, share in zip(numbers, shares):
            idx = (crop == c).nonzero(as_tuple=True)[0].numpy()
            expect += [int(idx[j]) for j in dpp_greedy_reference(feats[idx], rel[idx], share)]
        newlines = (crop == -1).nonzero(as_tuple=True)[0].tolist()
        assert sel.kept[i].tolist() == sorted(expect + newlines)
        assert len(sel.kept[i]) - len(newlines) == k


def test_crop_budgets_split_evenly_base_image_first():
    assert crop_budgets(15, [16, 16, 16]) == [5, 5, 5]
    assert crop_budgets(17, [16, 16, 16]) == [6, 6, 5]
    assert crop_budgets(20, [16, 3, 16]) == [9, 3, 8]
    assert crop_budgets(35, [16, 3, 16]) == [16, 3, 16]
    assert crop_budgets(0, [4, 4]) == [0, 0]
    assert crop_budgets(10, [2, 5, 5, 5]) == [2, 3, 3, 2]  # what a capped crop leaves is shared evenly again
    for scorer in (CDPrunerScorer, VisPrunerScorer):
        assert scorer().per_crop is True
        with pytest.raises(ValueError, match="per_crop"):
            scorer(per_crop="yes")


@pytest.mark.parametrize("spec", ["vispruner", "cdpruner"])
@torch.no_grad()
def test_per_crop_false_is_one_pool_per_image(spec):
    """``per_crop=False`` (visprune's earlier default): the image's packed tokens are one set."""
    model, proc = T.llava_next()
    inputs = llava_next_inputs(proc, [(T.IMAGE, 2 * T.IMAGE)])
    kept = {}
    for per_crop in (True, False):
        scorer = parse_method(f"{spec}:k=12,per_crop={str(per_crop).lower()}").config
        prune_(model, scorer, processor=proc)
        try:
            model(**inputs)
            sel = visprune.last_selection(model)
        finally:
            unprune_(model)
        kept[per_crop] = sel.kept[0]
        counts = [int((sel.encoded.crops[0][sel.kept[0]] == c).sum()) for c in range(3)]
        if per_crop:
            assert counts == [4, 4, 4]
    assert kept[True].tolist() != kept[False].tolist()
