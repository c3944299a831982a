"""Several threads calling one pruned model at once each get exactly what they would get alone."""

import dataclasses
import threading

import pytest
import torch

import visprune
from visprune import prune_, unprune_
from visprune import testing as T

from cases import CASES, QUESTIONS, module_state

THREADS, ROUNDS = 4, 3
# set-ups whose per-call hooks or instance overrides sit on shared modules, with FastV's layer hooks
RUNS = [("llava", {"scorer": "cls", "energy": 0.8}), ("qwen2_5_vl", {"scorer": "random", "energy": 0.8}),
        ("blip2-query", {"scorer": "random", "budget": "per_image"}), ("blip2-vit", {"scorer": "cls", "energy": 0.8}),
        ("idefics", {"scorer": "cls", "energy": 0.8}), ("idefics-noresampler", {"scorer": "cls", "energy": 0.8}),
        ("llava", {"scorer": "fastv", "keep": 0.5, "llm_layer": 1}),
        ("internvl", {"scorer": "cls", "energy": 0.8})]


@pytest.mark.parametrize("name,fields", RUNS, ids=[f"{n}-{f['scorer']}" for n, f in RUNS])
@torch.no_grad()
def test_concurrent_calls_equal_sequential_ones(name, fields):
    case = CASES[name]
    model, proc = case.build()
    imgs = T.images(3, size=case.image_size)
    # every thread runs its own mix of single images and batches, so budgets differ between threads
    work = [case.inputs(proc, [imgs[i % 3]], [QUESTIONS[i % 3]]) for i in range(THREADS - 1)]
    work.append(case.inputs(proc, imgs[:2], QUESTIONS[:2]))
    config = dataclasses.replace(case, mixed=fields).mixed_config()
    prune_(model, config, processor=proc)
    try:
        alone = []
        for inputs in work:
            logits = model(**inputs).logits
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
            alone.append((logits, out, visprune.last_kept(model)))
        state = module_state(model)  # after a first call: transformers installs hooks of its own lazily
        got, errors = [[] for _ in work], []
        start = threading.Barrier(THREADS)

        def run(i):
            try:
                start.wait()
                for _ in range(ROUNDS):
                    logits = model(**work[i]).logits
                    kept_forward = visprune.last_kept(model)
                    out = model.generate(**work[i], max_new_tokens=3, do_sample=False)
                    got[i].append((logits, kept_forward, out, visprune.last_kept(model)))
            except Exception as err:  # noqa: BLE001 - reported below with the thread's number
                errors.append((i, err))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
        torch.set_num_threads(1)
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        for i, (logits, out, kept) in enumerate(alone):
            for r, (c_logits, c_kept_fwd, c_out, c_kept) in enumerate(got[i]):
                assert torch.allclose(c_logits, logits, atol=1e-5), f"thread {i} round {r}: logits differ"
                assert torch.equal(c_out, out), f"thread {i} round {r}: generated tokens differ"
                for k in (c_kept_fwd, c_kept):
                    assert all(torch.equal(a, b) for a, b in zip(k, kept)) and len(k) == len(kept), \
                        f"thread {i} round {r}: last_kept is another call's"
        assert module_state(model) == state  # every hook and override gone once the calls are done
    finally:
        unprune_(model)
