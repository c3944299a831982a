"""What every adapter must do, written once and run over the case table (tests/cases.py): keep-all
equals the stock model, undo is exact, a batch with ragged per-image budgets equals its samples one
by one (greedy and beam), and ``generate`` gives the caller's own prompt back."""

import pytest
import torch

import visprune
from visprune import prune_, unprune_
from visprune import testing as T

from cases import CASES, QUESTIONS, module_state
from helpers import assert_batched_equals_one_by_one


@pytest.fixture(scope="module", params=list(CASES))
def built(request):
    case = CASES[request.param]
    model, proc = case.build()
    imgs = T.images(2, size=case.image_size)
    return case, model, proc, case.inputs(proc, imgs, QUESTIONS[:2]), imgs


def test_every_model_type_has_a_tiny_builder():
    """Adding an architecture is its adapter file (its ``TINY`` included), its ``ADAPTERS`` row and its ``CASES``
    row: ``visprune.testing`` makes a builder of every row of the adapter table, named after its model_type."""
    from visprune.adapters import ADAPTERS

    assert list(T.tiny_specs()) == list(ADAPTERS)
    assert list(T.TINY_BUILDERS) == [t.replace("-", "") for t in ADAPTERS]
    assert all(getattr(T, name) is build for name, build in T.TINY_BUILDERS.items())


def test_the_case_builds_its_declared_model(built):
    case, model, proc, _, _ = built
    spec = T.tiny_specs()[model.config.model_type]
    assert type(model).__name__ == spec.model and not model.training
    assert model.generation_config.pad_token_id == proc.tokenizer.pad_token_id


@torch.no_grad()
def test_keep_all_equals_stock(built):
    case, model, proc, inputs, _ = built
    ref = model(**inputs).logits
    gref = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    for scorer in case.scorers:
        prune_(model, case.prune_config(scorer=scorer, keep=1.0), processor=proc)
        try:
            assert (model(**inputs).logits - ref).abs().max().item() <= 1e-5, scorer
            assert torch.equal(model.generate(**inputs, max_new_tokens=5, do_sample=False), gref), scorer
        finally:
            unprune_(model)


@torch.no_grad()
def test_unprune_is_exact(built):
    case, model, proc, inputs, _ = built
    cls = type(model)
    before = model(**inputs).logits
    params = {k: v.clone() for k, v in model.state_dict().items()}
    state = module_state(model)
    prune_(model, case.prune_config(scorer=case.scorers[0], keep=0.25), processor=proc)
    assert visprune.is_pruned(model) and isinstance(model, cls)
    pruned = module_state(model)
    model(**inputs)
    assert module_state(model) == pruned  # nothing is left on the modules between calls either
    model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert module_state(model) == pruned
    unprune_(model)
    assert type(model) is cls and not visprune.is_pruned(model)
    assert module_state(model) == state
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(**inputs).logits, before)


@pytest.mark.parametrize("beams", [1, 2])
@torch.no_grad()
def test_mixed_budgets_batched_equal_one_by_one(built, beams):
    case, model, proc, inputs, imgs = built
    prune_(model, case.mixed_config(), processor=proc)
    try:
        singles = [case.inputs(proc, [img], [q]) for img, q in zip(imgs, QUESTIONS)]
        assert_batched_equals_one_by_one(model, inputs, singles, max_new_tokens=5, num_beams=beams)
    finally:
        unprune_(model)


@torch.no_grad()
def test_generate_returns_callers_prompt(built):
    case, model, proc, inputs, _ = built
    prune_(model, case.prune_config(scorer="random", keep=0.5), processor=proc)
    try:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
        assert torch.equal(out.sequences[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
        assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + 4
    finally:
        unprune_(model)


@pytest.mark.parametrize("field", ["layer", "text_layer"])
def test_out_of_range_layers_are_refused_at_prune_time(built, field):
    case, model, proc, _, _ = built
    with pytest.raises(ValueError, match=rf"{field}=-1000 is out of range: the vision tower .* has \d+ layers"):
        prune_(model, case.prune_config(scorer="random", keep=0.5, **{field: -1000}), processor=proc)
    assert not visprune.is_pruned(model)
