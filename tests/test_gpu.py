"""What only a CUDA device can show: the syncs the device itself reports and the benchmark's CUDA
fields. Run on purpose with ``pytest -m gpu`` (``scripts/gpu_checks.sh``), with the CUDA cases of
``tests/test_dtypes.py``; skipped without CUDA. On CPU the hot path's reads are counted by
``tests/test_host_reads.py``.
"""

from __future__ import annotations

import pytest
import torch
from helpers import on

from test_host_reads import MAX_READS, METHODS, QUESTIONS
from visprune import prune_, testing as T, unprune_
from visprune.apps.bench import bench
from visprune.measure.hostreads import count_cuda_syncs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# what pruning may add to a prefill: the prompt layout read and the kept-count read
MAX_ADDED_SYNCS = MAX_READS


def _inputs(proc, n: int) -> dict:
    return on(proc(images=T.images(n), text=[T.prompt(q) for q in QUESTIONS[:n]], return_tensors="pt", padding=True),
              "cuda")


@torch.no_grad()
def _syncs(model, inputs) -> list[str]:
    model(**inputs)  # warm: first calls allocate and may sync
    torch.cuda.synchronize()
    with count_cuda_syncs() as log:
        model(**inputs)
    return log


@pytest.mark.parametrize("method", list(METHODS))
def test_pruning_adds_at_most_two_syncs_however_many_images(method):
    model, proc = T.llava()
    model = model.cuda()
    counts = {}
    for n in (1, 4):
        inputs = _inputs(proc, n)
        stock = len(_syncs(model, inputs))
        prune_(model, METHODS[method], processor=None if "no processor" in method else proc)
        try:
            pruned = len(_syncs(model, inputs))
        finally:
            unprune_(model)
        counts[n] = (stock, pruned)
        assert pruned - stock <= MAX_ADDED_SYNCS, (method, n, stock, pruned)
    assert counts[1][1] - counts[1][0] == counts[4][1] - counts[4][0], counts


def test_bench_on_cuda_reports_syncs_and_allocator_memory():
    report = bench("tiny", methods=["atp:keep=0.5", "e-adaprune:energy=0.9"], repeats=1, warmup=1, new_tokens=2,
                   device="cuda", dtype=torch.bfloat16, progress=None)
    assert report["setup"]["device"].startswith("cuda")
    rows = {r["method"]: r for r in report["results"]}
    for r in rows.values():
        assert isinstance(r["cuda_syncs_prefill"], int)
        assert r["peak_memory_ratio"] is not None and r["peak_memory_ratio"] > 0
    assert rows["atp:keep=0.5"]["cuda_syncs_prefill"] - rows["none"]["cuda_syncs_prefill"] <= MAX_ADDED_SYNCS
