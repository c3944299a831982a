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
def test_lmtext_scores_are_max_cosine_to_question_embeddings():
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
    assert torch.allclose(sel.scores[0], (feats @ emb.T).amax(-1), atol=1e-5)
