"""The pruning hot path reads a fixed, small number of values back to the host per call.

On a GPU every read of tensor data into Python (``.tolist()``, ``.item()``, ``int(t)``,
``.cpu()``, ``nonzero``, boolean indexing) makes the host wait for the device. This machine has no
GPU, so the reads are counted where they happen (``visprune.measure.hostreads``). The count must not
grow with the number of images in the call: two reads, the prompt layout and the kept counts,
which a ragged batch cannot do without (the language model's input length depends on them).
"""

from __future__ import annotations

import pytest
import torch

import visprune
from visprune import PruneConfig, prune_, testing as T, unprune_
from visprune.measure.hostreads import count_host_reads
from visprune.transform import _pruned_call

QUESTIONS = ["what colour is the star ?", "how many circle ?", "is there a red square ?", "what shape is it ?"]
METHODS = {
    "atp": PruneConfig(scorer="atp", keep=0.25),
    "e-adaprune": PruneConfig(scorer="cls", budget="energy", energy=0.9),
    "atp+energy": PruneConfig(scorer="atp", budget="energy", energy=0.9),
    "cls+iqr": PruneConfig(scorer="cls", budget="iqr"),
    "lmtext, no processor": PruneConfig(scorer="lmtext", keep=0.25),  # the prompt's own tokens as the question
}
# the prompt's token ids and mask (one copy: image rows, questions, padding, new widths), then
# the kept count of each image
MAX_READS = 2


@pytest.fixture(scope="module")
def built():
    return T.llava()


def _reads(model, proc, n_images: int) -> list[str]:
    imgs = T.images(n_images)
    inputs = proc(images=imgs, text=[T.prompt(q) for q in QUESTIONS[:n_images]], return_tensors="pt", padding=True)
    with torch.no_grad(), count_host_reads() as log, _pruned_call(model, dict(inputs), side="left"):
        pass  # the preparation alone: images encoded, scored, selected, the call's inputs built
    return log


@pytest.mark.parametrize("method", list(METHODS))
def test_reads_do_not_grow_with_the_batch(built, method):
    model, proc = built
    prune_(model, METHODS[method], processor=None if "no processor" in method else proc)
    try:
        one, four = _reads(model, proc, 1), _reads(model, proc, 4)
    finally:
        unprune_(model)
    assert sorted(one) == sorted(four), (one, four)
    assert len(four) <= MAX_READS, four


def test_counter_sees_each_kind_of_read():
    x = torch.arange(6)
    with count_host_reads() as log:
        x.tolist()
        int(x[0])
        x[x > 2]
        x.nonzero()
        x.cpu()
    assert log == ["tolist", "_local_scalar_dense", "index", "nonzero", "cpu"]


@torch.no_grad()
def test_selection_unchanged_by_the_device_side_path(built):
    """The on-device top-k equals the index-list selection it replaced (the reference)."""
    model, proc = built
    imgs = T.images(4)
    inputs = proc(images=imgs, text=[T.prompt(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    for cfg in METHODS.values():
        prune_(model, cfg, processor=proc)
        try:
            model(**inputs)
            sel = visprune.last_selection(model)
        finally:
            unprune_(model)
        assert sel.scores is not None
        for i, kept in enumerate(sel.kept):
            k = len(kept)
            ref = torch.sort(torch.sort(sel.scores[i], descending=True, stable=True).indices[:k]).values
            assert torch.equal(kept, ref), (cfg, i)


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
@torch.no_grad()
def test_qwen_pruning_adds_a_fixed_few_reads(kind):
    """Qwen reads its grid back in the model's own code too; pruning adds the prompt layout, the grid
    (once), the captured image bounds and the kept counts, the same for 1 and 4 images. Qwen2.5-VL's
    window order is recorded from the tower's own call, not recomputed (which reads per image), and
    the recording attribute is gone afterwards."""
    model, proc = getattr(T, kind)()
    added = []
    for n in (1, 4):
        inputs = proc(images=T.images(n), text=[T.qwen_prompt(q) for q in QUESTIONS[:n]], return_tensors="pt",
                      padding=True)
        with count_host_reads() as stock:
            model(**inputs)
        prune_(model, PruneConfig(scorer="atp", keep=0.25), processor=proc)
        try:
            with count_host_reads() as pruned:
                model(**inputs)
        finally:
            unprune_(model)
        added.append(len(pruned) - len(stock))
    assert added == [4, 4], added
    assert "permute_input_for_window_attn" not in vars(model.model.visual)
