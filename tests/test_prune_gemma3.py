"""Gemma 3: SigLIP saliency pooled as the projector pools patches, the language model's inputs after
pruning (kept tokens, shortened ``token_type_ids``), and the chat template's question."""

import pytest
import torch

from visprune import PruneConfig
from visprune import testing as T
from visprune.adapters.gemma3 import Gemma3Adapter
from visprune.prompt import extract_question

from helpers import pruned_selection, recording


@pytest.fixture(scope="module")
def built():
    model, proc = T.gemma3()
    imgs = T.images(2, size=(112, 112))
    inputs = proc(images=[[im] for im in imgs], text=[T.gemma3_prompt(q) for q in ("is there a star ?", "how many circle ?")],
                  return_tensors="pt", padding=True)
    return model, proc, inputs


def _selection(model, proc, inputs, config, seen=None):
    """Prune, run once, unprune: the selection; ``seen`` gets the language model's ``inputs_embeds`` and
    the ``token_type_ids`` the model (which builds the bidirectional image mask from them) was given."""
    seen = {} if seen is None else seen
    hooks = [recording(seen, "embeds", model.model.language_model, "inputs_embeds"),
             recording(seen, "types", model.model, "token_type_ids")]
    return pruned_selection(model, proc, inputs, config, hooks=hooks)


@torch.no_grad()
def test_saliency_is_the_attention_each_token_s_patches_receive_pooled_as_the_projector_pools(built):
    model, proc, inputs = built
    sel = _selection(model, proc, inputs, PruneConfig(scorer="cls", k=4))
    tower = model.model.vision_tower
    tower.config._attn_implementation = "eager"
    try:
        att = tower(pixel_values=inputs["pixel_values"], output_attentions=True).attentions[-1]  # the last layer
    finally:
        tower.config._attn_implementation = "sdpa"
    received = att.mean(dim=(1, 2))  # [crops, 64]: mean over heads and queries, no [CLS] in SigLIP
    side = model.model.multi_modal_projector.patches_per_image
    window = model.model.multi_modal_projector.kernel_size
    grid = received.reshape(-1, side // window, window, side // window, window)
    ref = grid.mean(dim=(2, 4)).flatten(1)  # [crops, 16]: each LM token's 2 x 2 patches
    for i in range(2):
        assert torch.allclose(sel.encoded.saliency[i], ref[i], atol=1e-6)


@torch.no_grad()
def test_the_language_model_gets_the_kept_tokens_and_their_token_types(built):
    model, proc, inputs = built
    full = model.model.get_image_features(pixel_values=inputs["pixel_values"], return_dict=True).pooler_output
    seen = {}
    sel = _selection(model, proc, inputs, PruneConfig(scorer="atp", k=5, positions="original"), seen)
    image_id = model.config.image_token_id
    for row in range(2):
        kept = sel.kept[row]
        assert len(kept) == 5
        start = int((inputs["input_ids"][row] == image_id).nonzero()[0])
        assert torch.allclose(seen["embeds"][row, start : start + 5], full[row, kept], atol=1e-5)
        # the bidirectional image block follows the kept tokens: 5 image-typed positions, contiguous
        types = seen["types"][row]
        ones = (types == 1).nonzero().flatten()
        assert len(ones) == 5 and int(ones[-1] - ones[0]) == 4
    assert seen["types"].shape[1] == inputs["input_ids"].shape[1] - (16 - 5)  # each row loses 11 placeholders


def test_the_question_is_read_from_gemma_s_chat_template():
    adapter = Gemma3Adapter()
    decoded = "user\n\n\nwhat colour is the star ?\nmodel\n"
    assert extract_question(decoded, adapter.user_markers, adapter.assistant_markers) == "what colour is the star ?"


def test_overlays_and_pool_ask_the_adapter_for_the_token_grid(built):
    from PIL import Image

    from visprune.adapters import get_adapter

    model, proc, inputs = built
    boxes = get_adapter(model).token_boxes(model, proc, Image.new("RGB", (112, 112)))
    assert len(boxes) == 16 and boxes.boxes[5].tolist() == [0.25, 0.25, 0.5, 0.5]  # the pooled 4 x 4 tokens
    sel = _selection(model, proc, inputs, PruneConfig(scorer="pool", k=4))
    assert [len(k) for k in sel.kept] == [4, 4] and sel.encoded.grids == [(4, 4), (4, 4)]


def test_visprune_eval_runs_a_gemma3_folder(tmp_path, capsys):
    """The command line's loader, prompts and records need no Gemma code outside the adapter."""
    import json

    from visprune.apps.cli import main

    model, proc = T.gemma3()
    model.save_pretrained(tmp_path / "g3")
    proc.save_pretrained(tmp_path / "g3")
    rc = main(["eval", "--model", str(tmp_path / "g3"), "--task", "shapes-vqa", "--n", "2", "--method", "atp:keep=0.5",
               "--method", "pool:k=4", "--timing", "0", "--quiet", "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    rows = {r["method"]: r for r in json.loads((tmp_path / "out" / "summary.json").read_text())["methods"]}
    assert rows["atp:keep=0.5"]["kept_tokens"]["mean"] == 8 and rows["pool:k=4"]["kept_tokens"]["mean"] == 4
    assert 0 < rows["atp:keep=0.5"]["flops_ratio"] < 1 and rows["atp:keep=0.5"]["relevance"] == "lmtext"
