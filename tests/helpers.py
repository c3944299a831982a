"""Checks shared by the per-architecture test files."""

import torch

import visprune


@torch.no_grad()
def assert_batched_equals_one_by_one(model, inputs, singles, max_new_tokens=6, num_beams=1, ragged=True):
    """A batched ``generate`` of a pruned model equals each sample run alone.

    ``singles`` holds each sample's own inputs, in batch order. Every sample must keep the same
    tokens and generate the same new tokens as alone (a batched row may continue with padding
    after its sample stopped). ``ragged``: also require different per-sample budgets in the batch.
    Returns the batch's kept indices.
    """
    gen = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams)
    out = model.generate(**inputs, **gen)
    kept = visprune.last_kept(model)
    if ragged:
        assert len({len(k) for k in kept}) > 1, "the test needs different per-sample budgets"
    new_batch = out[:, inputs["input_ids"].shape[1] :]
    for i, one in enumerate(singles):
        single = model.generate(**one, **gen)
        assert torch.equal(visprune.last_kept(model)[0], kept[i]), f"sample {i}: kept tokens differ"
        new = single[0, one["input_ids"].shape[1] :]
        assert torch.equal(new, new_batch[i, : len(new)]), f"sample {i}: generated tokens differ"
    return kept


@torch.no_grad()
def pruned_generate_positions(model, processor, inputs, config, max_new_tokens=3):
    """Prune with ``config``, generate, unprune: the ``position_ids`` the language model received
    at each call (prefill first), and the kept indices."""
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["position_ids"].clone()), with_kwargs=True
    )
    visprune.prune_(model, config, processor=processor)
    try:
        model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        kept = visprune.last_kept(model)
    finally:
        visprune.unprune_(model)
        hook.remove()
    return seen, kept


def on(inputs, device, dtype=None) -> dict:
    """Processor outputs on ``device``; floating tensors (pixels) in ``dtype`` when given."""
    return {k: v.to(device, dtype) if v.is_floating_point() and dtype is not None else v.to(device)
            for k, v in dict(inputs).items()}


def save_llava(folder):
    """A tiny random-weight LLaVA and its processor, saved with ``save_pretrained`` into ``folder``
    (as a model folder on disk: ``name_or_path`` then points at it); returns the model."""
    from visprune import testing as T

    model, proc = T.llava()
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return model


def load_llava(folder):
    """(model, processor) of a LLaVA folder, through ``from_pretrained``, in eval mode."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


@torch.no_grad()
def pruned_selection(model, processor, inputs, config, hooks=()):
    """Prune with ``config``, run one forward on ``inputs``, unprune: the call's selection. ``hooks``
    (handles registered by the caller, e.g. to read the language model's inputs) are removed after."""
    visprune.prune_(model, config, processor=processor)
    try:
        model(**inputs)
        return visprune.last_selection(model)
    finally:
        visprune.unprune_(model)
        for h in hooks:
            h.remove()


def recording(seen: dict, name: str, module, key: str):
    """A forward pre-hook on ``module`` storing its keyword argument ``key`` in ``seen[name]`` (the first
    call's: the prefill); returns the handle, for ``pruned_selection(..., hooks=[...])``."""
    def hook(_m, _a, kw):
        seen.setdefault(name, kw.get(key))

    return module.register_forward_pre_hook(hook, with_kwargs=True)


@torch.no_grad()
def eager_tower_outputs(model, pixel_values):
    """The vision tower's eager forward with every hidden state and attention map (as official pruning
    code runs it), its attention implementation restored after."""
    tower = model.model.vision_tower
    impl = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        return tower(pixel_values, output_hidden_states=True, output_attentions=True)
    finally:
        tower.set_attn_implementation(impl)


@torch.no_grad()
def assert_keep_all_equals_stock(model, processor, inputs, scorers):
    """With every token kept, each scorer's pruned ``forward`` logits and ``generate`` output equal the
    stock model's bit for bit; returns the last call's kept indices per scorer."""
    ref = model(**inputs).logits
    gref = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    kept = {}
    for scorer in scorers:
        visprune.prune_(model, visprune.PruneConfig(scorer=scorer, keep=1.0), processor=processor)
        try:
            assert torch.equal(model(**inputs).logits, ref), scorer
            assert torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False), gref), scorer
            kept[scorer] = visprune.last_kept(model)
        finally:
            visprune.unprune_(model)
    return kept
