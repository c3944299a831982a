"""The baselines against independent references, on hand-made score contexts."""

import torch

import visprune
from visprune import PruneConfig
from visprune.scoring.budgets import IqrBudget
from visprune.scoring.context import ScoreContext
from visprune.scoring.scorers import DivPruneScorer, PoolScorer, VisionZipScorer
from visprune.scoring.scorers.pool import pool_shape


def _ctx(features, **kw):
    i, n, _ = features.shape
    return ScoreContext(
        features=features,
        valid=torch.ones(i, n, dtype=torch.bool),
        protected=torch.zeros(i, n, dtype=torch.bool),
        config=kw.pop("config", PruneConfig()),
        **kw,
    )


def test_registered_baselines_are_listed():
    assert {"pool", "visionzip", "divprune", "random", "cls", "text"} <= set(visprune.list_scorers())
    assert "iqr" in visprune.list_budgets()


def test_pool_shape_picks_the_largest_grid_within_budget():
    assert pool_shape(24, 24, 64) == (8, 8)
    assert pool_shape(24, 24, 144) == (12, 12)
    assert pool_shape(16, 16, 64) == (8, 8)
    assert pool_shape(16, 16, 32) == (4, 8)
    assert pool_shape(16, 16, 1000) == (16, 16)
    r, c = pool_shape(16, 16, 30)
    assert r * c == 30


def test_pool_equals_adaptive_average_pooling():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 64, 5, generator=g)  # two 8 x 8 grids
    ctx = _ctx(feats, grids=[(8, 8), (8, 8)])
    scorer = PoolScorer()
    kept = scorer.select(ctx, scorer(ctx), torch.tensor([16, 4]))
    merged = scorer.merge(ctx, kept)
    for i, (k, side) in enumerate([(16, 4), (4, 2)]):
        grid = feats[i].T.reshape(1, 5, 8, 8)
        ref = torch.nn.functional.adaptive_avg_pool2d(grid, side).reshape(5, -1).T
        assert len(kept[i]) == k
        assert torch.allclose(merged[i], ref, atol=1e-6)
    # window centres, row-major: 2 x 2 windows of a 8 x 8 grid -> patch (0,0)... (6,6)
    assert kept[0][:4].tolist() == [0, 2, 4, 6]


def test_pool_windows_on_an_uneven_grid_match_explicit_means():
    """5 x 7 grid to 2 x 3: overlapping windows [floor(i*n/m), ceil((i+1)*n/m)), averaged by hand."""
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(1, 35, 4, generator=g)
    ctx = _ctx(feats, grids=[(5, 7)])
    scorer = PoolScorer()
    kept = scorer.select(ctx, scorer(ctx), torch.tensor([6]))
    merged = scorer.merge(ctx, kept)[0]
    win = lambda n, m: [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]  # noqa: E731
    ref, centres = [], []
    for r0, r1 in win(5, 2):
        for c0, c1 in win(7, 3):
            ref.append(torch.stack([feats[0, r * 7 + c] for r in range(r0, r1) for c in range(c0, c1)]).mean(0))
            centres.append(((r0 + r1 - 1) // 2) * 7 + (c0 + c1 - 1) // 2)
    assert kept[0].tolist() == centres
    assert torch.allclose(merged, torch.stack(ref), atol=1e-6)


def test_visionzip_projected_dominant_and_contextual_split():
    g = torch.Generator().manual_seed(1)
    n, d = 100, 8
    feats = torch.randn(1, n, d, generator=g)
    keys = torch.randn(1, n, 6, generator=g)
    saliency = torch.rand(1, n, generator=g)
    ctx = _ctx(feats, saliency=saliency, keys=keys)
    scorer = VisionZipScorer(space="projected")  # the post-projector variant; as published: test_official_baselines.py
    kept = scorer.select(ctx, scorer(ctx), torch.tensor([64]))[0]
    assert len(kept) == 64
    dominant = set(torch.topk(saliency[0], 54).indices.tolist())
    assert dominant <= set(kept.tolist())
    merged = scorer.merge(ctx, [kept])[0]
    # reference for the 10 contextual tokens: stride targets over the rest, cosine-key assignment
    rest = torch.tensor(sorted(set(range(n)) - dominant))
    targets = rest[:: len(rest) // 10][:10]
    assert set(targets.tolist()) == set(kept.tolist()) - dominant
    others = rest[~torch.isin(rest, targets)]
    kn = torch.nn.functional.normalize(keys[0], dim=-1)
    assign = (kn[others] @ kn[targets].T).argmax(-1)
    pos = {int(p): j for j, p in enumerate(kept.tolist())}
    for j, t in enumerate(targets.tolist()):
        group = torch.cat([torch.tensor([t]), others[assign == j]])
        assert torch.allclose(merged[pos[t]], feats[0, group].mean(0), atol=1e-6)
    for t in dominant:
        assert torch.equal(merged[pos[t]], feats[0, t])


def _divprune_reference(x: torch.Tensor, k: int) -> list[int]:
    f = torch.nn.functional.normalize(x, dim=-1)
    d = 1 - f @ f.T
    n = len(x)
    nn_dist = [min(d[i, j].item() for j in range(n) if j != i) for i in range(n)]
    chosen = [max(range(n), key=lambda i: (nn_dist[i], -i))]
    while len(chosen) < k:
        best = max(
            (i for i in range(n) if i not in chosen),
            key=lambda i: (min(d[i, j].item() for j in chosen), -i),
        )
        chosen.append(best)
    return sorted(chosen)


def test_divprune_equals_greedy_max_min_reference():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 30, 6, generator=g)
    ctx = _ctx(feats)
    scorer = DivPruneScorer()
    kept = scorer.select(ctx, scorer(ctx), torch.tensor([7, 12]))
    assert kept[0].tolist() == _divprune_reference(feats[0], 7)
    assert kept[1].tolist() == _divprune_reference(feats[1], 12)


def test_divprune_at_a_half_budget_keeps_what_the_official_code_keeps():
    """The official count is ``int(round(threshold_ratio * image_feature_length))`` (vbdi/divprune,
    LLaVA/llava/model/llava_arch.py): 0.25 of 10 tokens is 2.5, which Python rounds to 2, and
    0.25 of 14 is 3.5, which it rounds to 4."""
    from visprune.scoring.budgets import RatioBudget
    from visprune.scoring.decide import decide

    g = torch.Generator().manual_seed(3)
    for n in (10, 14):
        feats = torch.randn(1, n, 6, generator=g)
        ctx = _ctx(feats, config=PruneConfig(scorer="divprune", keep=0.25))
        scorer = DivPruneScorer()
        kept, _ = decide(scorer, RatioBudget(), ctx, scorer(ctx))
        official_k = int(round(0.25 * n))
        assert len(kept[0]) == official_k == {10: 2, 14: 4}[n]
        assert kept[0].tolist() == _divprune_reference(feats[0], official_k)


def test_iqr_budget_counts_outliers_per_image():
    scores = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8, 50, 60], [1.0, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    ctx = _ctx(torch.zeros(2, 10, 2), config=PruneConfig(budget="iqr", min_keep=1))
    q1, q3 = torch.quantile(scores[0], torch.tensor([0.25, 0.75]))
    assert int((scores[0] > q3 + 1.5 * (q3 - q1)).sum()) == 2
    assert IqrBudget()(ctx, scores).tolist() == [2, 1]  # the flat row keeps min_keep
