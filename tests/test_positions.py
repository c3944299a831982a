"""PruneConfig(positions="original"): kept tokens keep the positions of the unpruned prompt."""

import pytest
import torch

import visprune
from helpers import assert_batched_equals_one_by_one, pruned_generate_positions
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T
from visprune.methods import parse_method

QUESTIONS = ["what colour is the star ?", "how many circle ?"]


@pytest.fixture(scope="module", params=list(T.BUILDERS))
def built(request):
    arch = request.param
    model, proc = T.BUILDERS[arch]()
    size = (T.IMAGE, T.IMAGE) if arch == "llava" else (T.IMAGE, 2 * T.IMAGE)
    imgs = T.images(2, size=size)
    inputs = proc(images=imgs, text=[T.prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    return model, proc, inputs, imgs


def _dropped_masked_out(model, inputs, kept):
    """The unpruned attention mask with every dropped image placeholder set to 0."""
    mask = inputs["attention_mask"].clone()
    image_id = model.config.image_token_id
    for b, k in enumerate(kept):  # one image per row
        slots = (inputs["input_ids"][b] == image_id).nonzero().flatten()
        dropped = torch.ones(len(slots), dtype=torch.bool)
        dropped[k] = False
        mask[b, slots[dropped]] = 0
    return mask


@torch.no_grad()
def test_forward_equals_the_unpruned_model_with_the_dropped_tokens_masked_out(built):
    """Masking a token out of attention keeps every other token's position; with
    positions="original" pruning must give exactly that, however much shorter the rows are."""
    model, proc, inputs, _ = built
    prune_(model, PruneConfig(scorer="atp", keep=0.25, positions="original"), processor=proc)
    try:
        pruned = model(**inputs).logits
        kept = visprune.last_kept(model)
    finally:
        unprune_(model)
    mask = _dropped_masked_out(model, inputs, kept)
    ref = model(**{**inputs, "attention_mask": mask}).logits
    left = proc.tokenizer.padding_side == "left"
    for b in range(len(kept)):
        n = int(mask[b].sum())
        row = pruned[b, -n:] if left else pruned[b, :n]
        assert row.shape[0] < inputs["input_ids"].shape[1]
        assert torch.allclose(row, ref[b, mask[b].bool()], atol=1e-5)

    prune_(model, PruneConfig(scorer="atp", keep=0.25), processor=proc)  # compact: a different result
    try:
        compact = model(**inputs).logits
    finally:
        unprune_(model)
    assert not torch.allclose(compact, pruned, atol=1e-3)


@torch.no_grad()
def test_generate_prefills_at_the_original_positions_and_decodes_after_the_unpruned_length(built):
    model, proc, inputs, _ = built
    seen, kept = pruned_generate_positions(model, proc, inputs, PruneConfig(scorer="cls", keep=0.25, positions="original"))
    full = inputs["attention_mask"]
    unpruned = (full.cumsum(-1) - 1).masked_fill(full == 0, 0)
    mask = _dropped_masked_out(model, inputs, kept)
    prefill = seen[0]
    for b in range(len(kept)):
        n = int(mask[b].sum())
        assert torch.equal(prefill[b, -n:], unpruned[b, mask[b].bool()])
    lengths = full.sum(-1)
    for t, step in enumerate(seen[1:]):  # each decoding step: the next position after the unpruned prompt
        assert torch.equal(step[:, -1], lengths + t)


@torch.no_grad()
def test_batched_generate_equals_one_by_one_with_original_positions(built):
    model, proc, inputs, imgs = built
    prune_(model, PruneConfig(scorer="atp", energy=0.8, positions="original"), processor=proc)
    try:
        singles = [proc(images=[i], text=[T.prompt(q)], return_tensors="pt") for i, q in zip(imgs, QUESTIONS)]
        assert_batched_equals_one_by_one(model, inputs, singles)
    finally:
        unprune_(model)


def test_positions_are_checked_before_the_model_is_touched():
    with pytest.raises(ValueError, match="unknown positions"):
        PruneConfig(positions="kept")
    qwen, _ = T.qwen2_vl()
    with pytest.raises(TypeError, match="supports: original"):
        prune_(qwen, PruneConfig(scorer="cls", positions="compact"))
    assert not visprune.is_pruned(qwen)
    prune_(qwen, PruneConfig(scorer="cls", positions="original"))  # what Qwen2-VL does anyway
    unprune_(qwen)
    llava, proc = T.llava()
    with pytest.raises(TypeError, match="fastv.*supports: original"):
        prune_(llava, PruneConfig(scorer="fastv", llm_layer=1, positions="compact"), processor=proc)
    assert not visprune.is_pruned(llava)
    assert parse_method("atp:k=8,positions=original").config.positions == "original"
