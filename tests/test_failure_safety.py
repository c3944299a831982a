"""An exception inside a pruned call leaves nothing behind, on every adapter (and FastV's layer hooks)."""

import pytest
import torch

import visprune
from visprune import PruneConfig, prune_, unprune_
from visprune import testing as T

from cases import CASES, QUESTIONS, module_state

RUNS = [(name, "random") for name in CASES] + [(name, s) for name in ("llava", "qwen2_vl") for s in ("fastv", "dart")] \
    + [("llava", "pdrop")]


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("name,scorer", RUNS, ids=[f"{n}-{s}" for n, s in RUNS])
@torch.no_grad()
def test_error_inside_a_pruned_call_leaves_nothing_behind(name, scorer):
    case = CASES[name]
    model, proc = case.build()
    inputs = case.inputs(proc, T.images(2, size=case.image_size), QUESTIONS[:2])
    before = model(**inputs).logits
    params = {k: v.clone() for k, v in model.state_dict().items()}
    extra = {"llm_layer": 1} if scorer in ("fastv", "dart") else {}
    prune_(model, PruneConfig(scorer=scorer, keep=0.5, **case.config, **extra), processor=proc)
    model(**inputs)
    last = visprune.last_selection(model)

    raised = []

    def boom(*_):  # the language model's head runs last: every per-call hook is live by then
        raised.append(True)
        raise Boom("inside the pruned call")

    handle = model.get_output_embeddings().register_forward_pre_hook(boom)
    state = module_state(model)
    try:
        for call in (lambda: model(**inputs), lambda: model.generate(**inputs, max_new_tokens=3, do_sample=False)):
            with pytest.raises(Boom):
                call()
            assert module_state(model) == state, "a hook or temporary attribute outlived the failed call"
            assert visprune.last_selection(model) is last, "a failed call replaced the last selection"
        assert len(raised) == 2
    finally:
        handle.remove()

    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)  # the next pruned call works
    assert out.shape[1] >= 1 and visprune.last_selection(model) is not last
    unprune_(model)
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(**inputs).logits, before)
