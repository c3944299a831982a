"""The CLIP ``text`` scorer (loaded from a local folder) and the weight-free ``lmtext`` scorer."""

import pytest
import torch

from visprune import testing as T
import visprune
from visprune import PruneConfig, prune_, unprune_


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    model, _ = T.llava()
    clip = T.clip_model(model.config.vision_config)
    path = tmp_path_factory.mktemp("clip")
    clip.save_pretrained(path)
    T.tokenizer().save_pretrained(path)
    return str(path)


@torch.no_grad()
def test_text_scorer_equals_clip_similarity(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    model, proc = T.llava()
    inputs = proc(images=T.images(1), text=[T.prompt("what colour is the star ?")], return_tensors="pt")
    prune_(model, PruneConfig(scorer="text", keep=0.5, text_encoder=clip_dir), processor=proc)
    try:
        model(**inputs)
        sel = visprune.last_selection(model)
    finally:
        unprune_(model)
    assert sel.questions == ["what colour is the star ?"]
    clip = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)
    hidden = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states[-1][:, 1:]
    patches = torch.nn.functional.normalize(clip.visual_projection(clip.vision_model.post_layernorm(hidden)), dim=-1)
    text = clip.get_text_features(**tok(["what colour is the star ?"], return_tensors="pt")).pooler_output
    ref = patches[0] @ torch.nn.functional.normalize(text, dim=-1)[0]
    assert torch.allclose(sel.scores[0], ref, atol=1e-5)
    assert len(sel.kept[0]) == 8
    assert torch.equal(sel.kept[0], torch.sort(torch.topk(ref, 8).indices).values)


@torch.no_grad()
def test_text_sign_flips_the_selection(clip_dir):
    model, proc = T.llava()
    inputs = proc(images=T.images(1), text=[T.prompt("is there a circle ?")], return_tensors="pt")
    kept = {}
    for sign in (1.0, -1.0):
        prune_(model, PruneConfig(scorer="text", k=4, text_encoder=clip_dir, text_sign=sign), processor=proc)
        try:
            model(**inputs)
            kept[sign] = set(visprune.last_kept(model)[0].tolist())
        finally:
            unprune_(model)
    assert not kept[1.0] & kept[-1.0]


@torch.no_grad()
def test_question_override_and_atp_with_clip(clip_dir):
    model, proc = T.llava()
    inputs = proc(images=T.images(2), text=[T.prompt("is there a star ?")] * 2, return_tensors="pt", padding=True)
    prune_(model, PruneConfig(scorer="atp", keep=0.25, text_encoder=clip_dir), processor=proc)
    try:
        model(**inputs, visprune_question=["how many circle", "what shape is the big one"])
        sel = visprune.last_selection(model)
        assert sel.questions == ["how many circle", "what shape is the big one"]
        assert type(model.__dict__["_visprune_state"].scorer.relevance).__name__ == "ClipTextScorer"
        with pytest.raises(ValueError, match="visprune_question has 1 entries"):
            model(**inputs, visprune_question=["one"])
    finally:
        unprune_(model)


@torch.no_grad()
def test_text_scorers_need_a_way_to_the_question():
    model, proc = T.llava()
    inputs = proc(images=T.images(1), text=[T.prompt("is there a star ?")], return_tensors="pt")
    prune_(model, PruneConfig(scorer="lmtext", keep=0.5))  # no processor: uses every prompt token
    try:
        model(**inputs)
        assert len(visprune.last_kept(model)[0]) == 8
    finally:
        unprune_(model)


@torch.no_grad()
def test_lmtext_scores_are_standardised_cosine_to_question_embeddings():
    model, proc = T.llava()
    inputs = proc(images=T.images(1), text=[T.prompt("what colour is the star ?")], return_tensors="pt")
    prune_(model, PruneConfig(scorer="lmtext", keep=0.5), processor=proc)
    try:
        model(**inputs)
        sel = visprune.last_selection(model)
    finally:
        unprune_(model)
    ids = proc.tokenizer("what colour is the star ?", add_special_tokens=False, return_tensors="pt").input_ids[0]
    emb = torch.nn.functional.normalize(model.get_input_embeddings()(ids), dim=-1)
    feats = torch.nn.functional.normalize(sel.encoded.features[0], dim=-1)
    c = feats @ emb.T
    ref = ((c - c.mean(0)) / (c.std(0, unbiased=False) + 1e-6)).amax(-1)
    assert torch.allclose(sel.scores[0], ref, atol=1e-4)


def _shared_direction_context():
    """Hand-made: 6 tokens along a shared direction ``m`` (background), 2 (indices 6, 7) leaning
    away from it towards the question's content word ``w``; the question's other token is ``m``
    itself (a stop word whose embedding leans to the shared direction), plus padding and a
    protected token that must not enter the statistics."""
    from visprune.scoring.context import ScoreContext

    d = 8
    m, w = torch.zeros(d), torch.zeros(d)
    m[0], w[1] = 1.0, 1.0
    g = torch.Generator().manual_seed(0)
    feats = 10 * m + 0.1 * torch.randn(10, d, generator=g)
    feats[6:8] = 10 * m - 6 * m + 3 * w + 0.1 * torch.randn(2, d, generator=g)  # the question's object
    feats[8] = 100 * w  # protected: would dominate the statistics if counted
    feats[9] = float("nan")  # padding
    valid = torch.ones(1, 10, dtype=torch.bool)
    valid[0, 9] = False
    protected = torch.zeros(1, 10, dtype=torch.bool)
    protected[0, 8] = True
    embeds = [torch.stack([m + 0.3 * w, 0.5 * m + w])]  # both lean towards m, as on the shapes VLM
    return ScoreContext(features=feats[None], valid=valid, protected=protected, config=PruneConfig(), question_embeds=embeds)


def test_lmtext_standardising_ranks_the_question_object_first_where_raw_cosine_ranks_it_last():
    from visprune.scoring.scorers import LmTextScorer

    ctx = _shared_direction_context()
    cand = ctx.candidates[0]
    raw = LmTextScorer(standardize=False)(ctx)[0]
    std = LmTextScorer()(ctx)[0]
    order = lambda s: [int(i) for i in torch.argsort(torch.where(cand, s, torch.tensor(float("-inf"))), descending=True)[:2]]
    assert set(order(std)) == {6, 7}  # standardised: the object leads
    assert raw[6:8].max() < raw[:6].min()  # raw cosine: the object comes last
    # the statistics are over the candidates only (protected and padding excluded)
    e = torch.nn.functional.normalize(ctx.question_embeds[0], dim=-1)
    c = torch.nn.functional.normalize(ctx.features[0, :8], dim=-1) @ e.T
    ref = ((c - c.mean(0)) / (c.std(0, unbiased=False) + 1e-6)).amax(-1)
    assert torch.allclose(std[:8], ref, atol=1e-5)
    assert torch.isfinite(std).all()


def test_lmtext_single_candidate_and_empty_question_are_finite():
    from visprune.scoring.context import ScoreContext
    from visprune.scoring.scorers import LmTextScorer

    feats = torch.randn(2, 3, 4)
    valid = torch.tensor([[True, False, False], [True, True, True]])
    ctx = ScoreContext(features=feats, valid=valid, protected=torch.zeros(2, 3, dtype=torch.bool), config=PruneConfig(),
                       question_embeds=[torch.randn(2, 4), torch.zeros(0, 4)])
    out = LmTextScorer()(ctx)
    assert torch.isfinite(out).all() and out[1].eq(0).all()
