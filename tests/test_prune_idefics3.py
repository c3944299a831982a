"""Idefics3 / SmolVLM: SigLIP saliency grouped as the connector's pixel shuffle groups patches, padded
tiles and padded patches, the language model's inputs after pruning (kept tokens, every tile marker
kept), the chat template's question, and ``visprune eval`` on a saved folder."""

import pytest
import torch

from visprune import PruneConfig
from visprune import testing as T
from visprune.adapters.idefics3 import Idefics3Adapter
from visprune.prompt import extract_question

from helpers import pruned_selection, recording

QUESTIONS = ("what colour is the star ?", "how many circle ?")
# (builder, tiles, image sizes): 5 tiles and 3 tiles (two all-zero padding tiles the model skips),
# or one global tile each
SETUPS = {"idefics3-tiles": (T.idefics3, True, [(112, 112), (112, 56)]),
          "smolvlm-tiles": (T.smolvlm, True, [(224, 224), (112, 224)]),
          "idefics3-padded": (T.idefics3, False, [(112, 112), (112, 56)])}


@pytest.fixture(scope="module", params=sorted(SETUPS))
def built(request):
    build, tiles, sizes = SETUPS[request.param]
    model, proc = build(tiles=tiles)
    imgs = [T.images(1, size=s, seed=i)[0] for i, s in enumerate(sizes)]
    inputs = proc(images=[[im] for im in imgs], text=[T.prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    if request.param.endswith("padded"):
        # a tile padded to the batch's largest (pixel_attention_mask); this processor makes every tile
        # one size, so the padding is made by hand: the right quarter of the second picture's tile
        inputs["pixel_values"][1, 0, :, :, 84:] = 0
        inputs["pixel_attention_mask"][1, 0, :, 84:] = 0
    return model, proc, inputs


def _real_tiles(inputs):
    """The tiles the model encodes (not all zero) and the patch mask of each, as ``get_image_features`` builds them."""
    pv = inputs["pixel_values"].flatten(0, 1)
    real = (pv != 0).flatten(1).any(-1)
    pixels = inputs["pixel_attention_mask"].flatten(0, 1)[real]
    n, h, w = pixels.shape
    patches = pixels.reshape(n, h // T.PATCH, T.PATCH, w // T.PATCH, T.PATCH).amax(dim=(2, 4)).bool()
    return real.reshape(inputs["pixel_values"].shape[:2]).sum(1).tolist(), patches


@torch.no_grad()
def test_saliency_is_the_attention_each_token_s_patches_receive_grouped_as_the_pixel_shuffle(built):
    model, proc, inputs = built
    sel = pruned_selection(model, proc, inputs, PruneConfig(scorer="cls", k=4))
    vision = model.model.vision_model
    vision.config._attn_implementation = "eager"
    try:
        att = model.model.get_image_features(inputs["pixel_values"], inputs["pixel_attention_mask"],
                                             output_attentions=True).attentions[-1]  # [tiles, heads, P*P, P*P]
    finally:
        vision.config._attn_implementation = "sdpa"
    per_sample, valid = _real_tiles(inputs)
    valid = valid.flatten(1)
    weights = valid.float() / valid.sum(-1, keepdim=True)  # the mean over real queries
    received = (att.float().mean(1) * weights[:, :, None]).sum(1)  # [tiles, P*P]: no [CLS] in SigLIP
    assert torch.all(received[~valid] < 1e-6)  # padding patches are masked keys: they receive nothing
    side, s = int(received.shape[1] ** 0.5), model.config.scale_factor
    ref = received.reshape(-1, side // s, s, side // s, s).mean(dim=(2, 4)).flatten(1)  # each token's s x s patches
    assert [len(x) for x in sel.encoded.saliency] == [t * ref.shape[1] for t in per_sample]
    for mine, theirs in zip(sel.encoded.saliency, ref.split(per_sample)):
        assert torch.allclose(mine, theirs.flatten(), atol=1e-6)


@torch.no_grad()
def test_the_language_model_gets_the_kept_tokens_and_every_tile_marker(built):
    model, proc, inputs = built
    full = model.model.get_image_features(inputs["pixel_values"], inputs["pixel_attention_mask"]).pooler_output
    seen = {}
    hooks = [recording(seen, "embeds", model.model.text_model, "inputs_embeds"), recording(seen, "ids", model.model, "input_ids")]
    sel = pruned_selection(model, proc, inputs, PruneConfig(scorer="atp", keep=0.25), hooks=hooks)
    assert sel.questions == list(QUESTIONS)  # read after the tile markers <row_i_col_j> / <global-img>
    image_id = model.config.image_token_id
    for row in range(2):
        kept = sel.kept[row]
        assert len(kept) == round(0.25 * len(full[row])) < len(full[row])
        ids = seen["ids"][row]
        assert torch.allclose(seen["embeds"][row, ids == image_id], full[row][kept], atol=1e-5)
        # every text token survives, in order: the tile markers, newlines and the question
        before = inputs["input_ids"][row][inputs["attention_mask"][row].bool()]
        after = ids[ids != proc.tokenizer.pad_token_id]
        assert torch.equal(before[before != image_id], after[after != image_id])


def test_the_question_is_read_after_the_tile_markers():
    adapter = Idefics3Adapter()
    decoded = "User:<row_1_col_1><row_1_col_2>\n\n<global-img>What colour is the star?\nAssistant:"
    assert extract_question(decoded, adapter.user_markers, adapter.assistant_markers) == "What colour is the star?"
    plain = "User:What colour is the star?\nAssistant:"  # markers removed as special tokens
    assert extract_question(plain, adapter.user_markers, adapter.assistant_markers) == "What colour is the star?"


def test_visprune_eval_runs_an_idefics3_folder(tmp_path, capsys):
    """The command line's loader, prompts and records need no Idefics3 code outside the adapter."""
    import json

    from visprune.apps.cli import main

    model, proc = T.idefics3()
    model.save_pretrained(tmp_path / "i3")
    proc.save_pretrained(tmp_path / "i3")
    rc = main(["eval", "--model", str(tmp_path / "i3"), "--task", "shapes-vqa", "--n", "2", "--method", "atp:keep=0.5",
               "--timing", "0", "--quiet", "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    rows = {r["method"]: r for r in json.loads((tmp_path / "out" / "summary.json").read_text())["methods"]}
    assert rows["atp:keep=0.5"]["kept_tokens"]["mean"] == 40  # half of 5 tiles x 16 tokens
    assert 0 < rows["atp:keep=0.5"]["flops_ratio"] < 1 and rows["atp:keep=0.5"]["relevance"] == "lmtext"


@pytest.mark.parametrize("scorer", ["fastv", "dart", "pdrop"])
@torch.no_grad()
def test_in_llm_methods_run_on_the_text_model(scorer):
    """The in-LLM hooks find the decoder at ``model.model.text_model``: keeping every token equals
    the stock model, and a pruned batch generates what each sample generates alone."""
    from helpers import assert_batched_equals_one_by_one
    from visprune import prune_, unprune_

    model, proc = T.idefics3(tiles=False)
    imgs = [T.images(2, size=(112, 112))[i] for i in range(2)]
    inputs = proc(images=[[im] for im in imgs], text=[T.prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    layer = {} if scorer == "pdrop" else {"llm_layer": 1}
    ref = model(**inputs).logits
    real = inputs["attention_mask"].bool()
    prune_(model, PruneConfig(scorer=scorer, keep=1.0, **layer), processor=proc)
    try:
        assert (model(**inputs).logits - ref)[real].abs().max().item() <= 1e-5
    finally:
        unprune_(model)
    prune_(model, PruneConfig(scorer=scorer, keep=0.5, **layer), processor=proc)
    try:
        singles = [proc(images=[[im]], text=[T.prompt(q)], return_tensors="pt") for im, q in zip(imgs, QUESTIONS)]
        kept = assert_batched_equals_one_by_one(model, inputs, singles, max_new_tokens=4, ragged=False)
        assert [len(k) for k in kept] == [8, 8]
    finally:
        unprune_(model)
    assert all(not m._forward_pre_hooks for m in model.model.text_model.layers)
