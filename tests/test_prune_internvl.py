"""InternVL 3: [CLS] saliency grouped as the pixel shuffle groups patches, tiles joined into one image
per ``<img>...</img>`` run (the budget counted per image), the language model's inputs after pruning,
and the chat template's question."""

import pytest
import torch

import visprune
from visprune import PruneConfig
from visprune import testing as T
from visprune.adapters.internvl import InternVLAdapter
from visprune.prompt import extract_question

from helpers import pruned_selection, recording

QUESTIONS = ("is there a star ?", "how many circle ?")
TILES = [3, 1]  # a 2:1 image: two tiles and a thumbnail; a square one: one tile
PER_TILE = 16  # 8 x 8 patches of a 112 px tile, 2 x 2 patches per token


def _inputs(proc):
    imgs = [T.images(1, size=(224, 112))[0], T.images(2, size=(112, 112))[1]]
    return proc(images=[[im] for im in imgs], text=[T.internvl_prompt(q) for q in QUESTIONS], return_tensors="pt",
                padding=True)


@pytest.fixture(scope="module")
def built():
    model, proc = T.internvl()
    return model, proc, _inputs(proc)


def _selection(model, proc, inputs, config, seen=None):
    """Prune, run once, unprune: the selection; ``seen`` gets the ``input_ids`` the model was given and
    the language model's ``inputs_embeds``."""
    seen = {} if seen is None else seen
    hooks = [recording(seen, "embeds", model.model.language_model, "inputs_embeds"),
             recording(seen, "ids", model.model, "input_ids")]
    return pruned_selection(model, proc, inputs, config, hooks=hooks)


def test_the_pixel_shuffle_puts_each_2x2_block_of_patches_in_one_token():
    """What the alignment rests on: token ``r * 4 + c`` of a tile stacks patches ``(2r..2r+1, 2c..2c+1)``."""
    model, _ = T.internvl()
    index = torch.arange(64.0).reshape(1, 8, 8, 1)  # each patch's own number, one channel
    tokens = model.model.pixel_shuffle(index, scale_factor=0.5).reshape(16, 4)
    for r in range(4):
        for c in range(4):
            block = {8 * (2 * r + dr) + 2 * c + dc for dr in (0, 1) for dc in (0, 1)}
            assert set(tokens[4 * r + c].tolist()) == block


@pytest.mark.parametrize("qk_norm", [False, True], ids=["internvit-300m", "qk-norm"])
@torch.no_grad()
def test_saliency_is_the_cls_attention_of_each_token_s_2x2_patches(qk_norm):
    model, proc = T.internvl(qk_norm=qk_norm)
    inputs = _inputs(proc)
    sel = _selection(model, proc, inputs, PruneConfig(scorer="cls", k=4))
    tower = model.model.vision_tower
    tower.config._attn_implementation = "eager"
    try:
        att = tower(pixel_values=inputs["pixel_values"], output_attentions=True).attentions[-1]  # the feature layer
    finally:
        tower.config._attn_implementation = "sdpa"
    cls_row = att[:, :, 0, 1:].mean(1)  # [tiles, 64]: the [CLS] query's attention to each patch, heads averaged
    ref = cls_row.reshape(-1, 4, 2, 4, 2).mean(dim=(2, 4)).flatten(1)  # [tiles, 16]: each token's 2 x 2 patches
    per_image = [torch.cat(list(part)) for part in ref.split(TILES)]
    assert [len(s) for s in sel.encoded.saliency] == [t * PER_TILE for t in TILES]
    for got, want in zip(sel.encoded.saliency, per_image):
        assert torch.allclose(got, want, atol=1e-6)


@torch.no_grad()
def test_the_language_model_gets_the_kept_tokens_between_img_and_end_img(built):
    model, proc, inputs = built
    full = model.model.get_image_features(pixel_values=inputs["pixel_values"], return_dict=True).pooler_output
    per_image = [part.flatten(0, 1) for part in full.split(TILES)]  # [tiles * 16, D] per image
    seen = {}
    sel = _selection(model, proc, inputs, PruneConfig(scorer="atp", k=5, positions="original"), seen)
    tok = proc.tokenizer
    image_id, start_id, end_id = model.config.image_token_id, tok.start_image_token_id, tok.end_image_token_id
    for row in range(2):
        ids = seen["ids"][row]
        assert len(sel.kept[row]) == 5
        where = (ids == image_id).nonzero().flatten()
        assert len(where) == 5 and int(where[-1] - where[0]) == 4  # one contiguous run of the kept tokens
        # the structure tokens are text: never dropped, right around the kept run
        assert int((ids == start_id).sum()) == 1 and int((ids == end_id).sum()) == 1
        assert int(ids[where[0] - 1]) == start_id and int(ids[where[-1] + 1]) == end_id
        assert torch.allclose(seen["embeds"][row, where], per_image[row][sel.kept[row]], atol=1e-5)
    dropped = sum(t * PER_TILE for t in TILES) - 2 * 5
    assert (inputs["attention_mask"].sum() - seen["ids"].ne(proc.tokenizer.pad_token_id).sum()) == dropped


def test_the_budget_is_counted_per_image_across_its_tiles(built):
    model, proc, inputs = built
    assert inputs["pixel_values"].shape[0] == sum(TILES)
    sel = _selection(model, proc, inputs, PruneConfig(scorer="cls", keep=0.25))
    assert sel.encoded.extras["tiles"] == TILES
    assert [len(f) for f in sel.encoded.features] == [48, 16]
    assert [len(k) for k in sel.kept] == [12, 4]  # a quarter of each image's tokens, thumbnail included
    # the tiles' tokens compete on one score: the 2-tile image's picks are wherever its scores are highest
    assert torch.equal(sel.kept[0], sel.encoded.saliency[0].topk(12).indices.sort().values)
    # one grid only where the image is one tile
    assert sel.encoded.grids == [None, (4, 4)]


@torch.no_grad()
def test_two_images_in_one_prompt_are_two_runs_each_with_its_budget():
    model, proc = T.internvl()
    wide, square = T.images(1, size=(224, 112))[0], T.images(2, size=(112, 112))[1]
    inputs = proc(images=[[wide, square], [square]], text=[T.internvl_prompt("is there a dog ?", 2),
                                                          T.internvl_prompt("how many circle ?")],
                  return_tensors="pt", padding=True)
    stock = model(**inputs).logits
    sel = pruned_selection(model, proc, inputs, PruneConfig(scorer="cls", keep=0.25))
    assert sel.encoded.extras["tiles"] == [3, 1, 1] and sel.image_rows == [0, 0, 1]
    assert [len(k) for k in sel.kept] == [12, 4, 4]
    visprune.prune_(model, PruneConfig(scorer="cls", keep=1.0), processor=proc)
    try:
        assert torch.equal(model(**inputs).logits, stock)  # keep-all: the stock model, tiles regrouped and all
    finally:
        visprune.unprune_(model)


def test_pool_is_refused_on_tiled_images(built):
    model, proc, _ = built
    with pytest.raises(TypeError, match="one patch grid"):
        visprune.prune_(model, PruneConfig(scorer="pool", k=4), processor=proc)


def test_the_question_is_read_from_internvl_s_chat_template():
    adapter = InternVLAdapter()
    # "<|im_start|>system\n...<|im_end|>\n<|im_start|>user\n<img>...</img>\n{q}<|im_end|>\n<|im_start|>assistant\n",
    # decoded with skip_special_tokens
    decoded = "system\nYou are InternVL.\nuser\n\nwhat colour is the star ?\nassistant\n"
    assert extract_question(decoded, adapter.user_markers, adapter.assistant_markers) == "what colour is the star ?"


def test_visprune_eval_runs_an_internvl_folder(tmp_path, capsys, monkeypatch):
    """The command line's loader, prompts and records need no InternVL code outside the adapter. The
    folder's ``InternVLProcessor`` cannot load here (its video processor needs torchvision), so
    ``AutoProcessor`` hands back the test processor; the model loads from the folder."""
    import json

    import transformers

    from visprune.apps.cli import main

    model, proc = T.internvl()
    model.save_pretrained(tmp_path / "ivl")
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", staticmethod(lambda *a, **k: proc))
    rc = main(["eval", "--model", str(tmp_path / "ivl"), "--task", "shapes-vqa", "--n", "2", "--method", "atp:keep=0.5",
               "--timing", "0", "--quiet", "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    rows = {r["method"]: r for r in json.loads((tmp_path / "out" / "summary.json").read_text())["methods"]}
    row = rows["atp:keep=0.5"]
    assert row["kept_tokens"]["mean"] == 8  # square shapes pictures: one tile of 16 tokens
    assert 0 < row["flops_ratio"] < 1 and row["relevance"] == "lmtext"


def test_savings_table_counts_internvl_per_tile():
    """The InternVL savings rows (``docs/savings.md``) on tiny meta-device configs: 16 tokens per 112 px tile, the
    tower once per tile, the language model on the kept count."""
    from visprune.adapters import internvl

    one, five = (section.rows for section in internvl.savings(tiny=True))
    assert [r.at_cut for r in one] == [16, 8, 4] and [r.at_cut for r in five] == [80, 40, 20]
    assert five[0].vision == 5 * one[0].vision and len({r.vision for r in five}) == 1
    assert five[2].lm < five[1].lm < five[0].lm
