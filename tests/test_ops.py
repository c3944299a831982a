"""Pure operations against independent references."""

import math

import pytest
import torch

from visprune import ops


def _svd_reference(x: torch.Tensor, energy: float) -> list[int]:
    out = []
    for m in x.double():
        s2 = torch.linalg.svdvals(m) ** 2
        share = torch.cumsum(s2, 0) / s2.sum()
        out.append(int((share >= energy - 1e-9).nonzero()[0]) + 1)
    return out


@pytest.mark.parametrize("shape", [(3, 40, 16), (2, 16, 64), (4, 32, 32)])
@pytest.mark.parametrize("energy", [0.3, 0.5, 0.9, 0.99])
def test_energy_budget_equals_svd_reference(shape, energy):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    assert ops.energy_budget(x, energy).tolist() == _svd_reference(x, energy)


def test_energy_budget_rank_deficient():
    g = torch.Generator().manual_seed(2)
    ranks = [1, 3, 7]
    x = torch.stack([torch.randn(50, r, generator=g) @ torch.randn(r, 24, generator=g) for r in ranks])
    assert ops.energy_budget(x, 1.0).tolist() == ranks
    for energy in (0.6, 0.95):
        assert ops.energy_budget(x, energy).tolist() == _svd_reference(x, energy)


def test_energy_budget_grows_with_tau():
    x = torch.randn(5, 64, 32, generator=torch.Generator().manual_seed(3))
    ks = torch.stack([ops.energy_budget(x, t) for t in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0)])
    assert (ks[1:] >= ks[:-1]).all()
    assert (ks[-1] > ks[0]).all()


def test_energy_budget_ignores_padding_rows():
    x = torch.randn(1, 20, 8, generator=torch.Generator().manual_seed(4))
    padded = torch.cat([x, torch.full((1, 5, 8), 7.0)], dim=1)
    valid = torch.tensor([[True] * 20 + [False] * 5])
    assert ops.energy_budget(padded, 0.9, valid=valid).tolist() == ops.energy_budget(x, 0.9).tolist()


def test_energy_budget_bad_input():
    with pytest.raises(ValueError, match="energy"):
        ops.energy_budget(torch.randn(1, 4, 4), 0.0)
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        ops.energy_budget(torch.randn(4, 4), 0.5)
    assert ops.energy_budget(torch.zeros(2, 5, 3), 0.9).tolist() == [1, 1]


def test_keep_indices_topk_ascending_ties_to_lower_index():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.2], [1.0, 1.0, 1.0, 1.0, 1.0]])
    kept = ops.keep_indices(scores, torch.tensor([2, 3]))
    assert kept[0].tolist() == [1, 3]
    assert kept[1].tolist() == [0, 1, 2]
    assert all(k.dtype == torch.int64 for k in kept)


def test_keep_indices_matches_sorting_reference():
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 6, (6, 30), generator=g).float()  # many ties
    k = torch.randint(1, 31, (6,), generator=g)
    for row, kk, got in zip(scores, k, ops.keep_indices(scores, k)):
        ref = sorted(sorted(range(30), key=lambda i: (-row[i].item(), i))[: int(kk)])
        assert got.tolist() == ref


def test_keep_indices_edge_cases():
    scores = torch.tensor([[0.3, float("nan"), 0.8, -math.inf]])
    assert ops.keep_indices(scores, 2)[0].tolist() == [0, 2]
    assert ops.keep_indices(scores, 10)[0].tolist() == [0, 1, 2, 3]  # k > N keeps all
    with pytest.raises(ValueError):
        ops.keep_indices(torch.zeros(3), 1)


def test_topk_mask_and_mask_indices_match_a_sorting_reference():
    g = torch.Generator().manual_seed(6)
    scores = torch.randint(0, 6, (6, 30), generator=g).float()  # many ties
    scores[0, 3], scores[1, :4] = float("nan"), -math.inf
    k = torch.randint(0, 34, (6,), generator=g)  # 0 and k > N included
    mask = ops.topk_mask(scores, k)
    got = ops.mask_indices(mask, mask.sum(-1).tolist())
    for row, kk, a in zip(scores.tolist(), k.tolist(), got):
        key = [-math.inf if math.isnan(v) else v for v in row]  # NaN ranks with -inf, ties to the lower index
        assert a.tolist() == sorted(sorted(range(30), key=lambda i: (-key[i], i))[:kk])
    assert [len(a) for a in ops.mask_indices(mask)] == k.clamp(max=30).tolist()  # sizes read when not given
    assert ops.topk_mask(scores, 2).sum(-1).tolist() == [2] * 6
    with pytest.raises(ValueError, match="entries for 6 rows"):
        ops.topk_mask(scores, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="sizes has 1 entries"):
        ops.mask_indices(mask, [3])


@pytest.mark.parametrize(
    "name, fn, args",
    [
        ("topk_mask", ops.topk_mask, (torch.randn(2, 50), torch.tensor([5, 20]))),
        ("normalize", ops.normalize, (torch.randn(2, 50), "minmax", torch.rand(2, 50) > 0.2)),
        ("cls_attention", ops.cls_attention, (torch.randn(2, 51, 32), torch.randn(2, 51, 32), 4)),
        ("energy_budget", ops.energy_budget, (torch.randn(2, 50, 16), 0.9, torch.rand(2, 50) > 0.2)),
        ("ratio_budget", ops.ratio_budget, (torch.tensor([50, 7]), 0.25)),
    ],
)
def test_hot_path_ops_compile_without_graph_breaks(name, fn, args):
    """torch.compile traces each scoring / budget / selection op as one graph (fullgraph=True
    fails on any graph break); the eager backend keeps this test free of code generation."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="eager", dynamic=True)
    assert torch.equal(compiled(*args), fn(*args))


def test_ratio_budget_rounds_and_clamps():
    counts = torch.tensor([576, 16, 1, 10])
    assert ops.ratio_budget(counts, 0.25).tolist() == [144, 4, 1, 2]  # 2.5 rounds half to even, as round() does
    assert [int(ops.ratio_budget(n, 0.5)) for n in (3, 5, 7, 9)] == [round(n * 0.5) for n in (3, 5, 7, 9)]
    assert ops.ratio_budget(counts, 1.0).tolist() == [576, 16, 1, 10]


@pytest.mark.parametrize("method", ["minmax", "softmax", "rank"])
def test_normalize_is_per_row_and_masks(method):
    s = torch.tensor([[1.0, 2.0, 3.0, 100.0], [10.0, 30.0, 20.0, 0.0]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    out = ops.normalize(s, method, valid)
    assert out[0, 3] == -math.inf
    assert out[0, :3].argsort().tolist() == [0, 1, 2]
    if method == "minmax":
        assert out[0, :3].tolist() == [0.0, 0.5, 1.0]
    if method == "softmax":
        assert torch.allclose(out[1].sum(), torch.tensor(1.0))


def test_attention_rows_equal_full_softmax():
    g = torch.Generator().manual_seed(6)
    q, k = torch.randn(2, 9, 16, generator=g), torch.randn(2, 9, 16, generator=g)
    heads, hd = 4, 4
    qh = q.view(2, 9, heads, hd).transpose(1, 2)
    kh = k.view(2, 9, heads, hd).transpose(1, 2)
    full = torch.softmax(qh @ kh.transpose(-1, -2) * hd**-0.5, -1)  # [B, H, T, T]
    assert torch.allclose(ops.cls_attention(q, k, heads), full[:, :, 0].mean(1), atol=1e-6)
    assert torch.allclose(ops.received_attention(q, k, heads), full.mean(dim=(1, 2)), atol=1e-6)
    # padding tokens (the last 3 of row 1): masked as keys, left out of the mean over queries
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 6:] = False
    logits = (qh @ kh.transpose(-1, -2) * hd**-0.5).masked_fill(~valid[:, None, None, :], float("-inf"))
    masked = torch.softmax(logits, -1).mean(1)  # [B, T, T]
    ref = torch.stack([masked[b][valid[b]].mean(0) for b in range(2)])
    got = ops.received_attention(q, k, heads, valid=valid)
    assert torch.allclose(got, ref, atol=1e-6) and torch.all(got[1, 6:] == 0)
    assert torch.allclose(ops.received_attention(q, k, heads, valid=torch.ones_like(valid)), full.mean(dim=(1, 2)), atol=1e-6)


def test_pad_ragged():
    out, mask = ops.pad_ragged([torch.ones(2, 3), torch.ones(4, 3)], value=-1.0)
    assert out.shape == (2, 4, 3) and mask.sum().item() == 6 and out[0, 3, 0] == -1.0


def test_to_device_copies_host_tensors_unchanged():
    host = torch.arange(5)
    out = ops.to_device(host, "cpu")
    assert torch.equal(out, host) and out.device.type == "cpu"
    if torch.cuda.is_available():  # pinned, queued copy
        assert torch.equal(ops.to_device(host, "cuda").cpu(), host)
