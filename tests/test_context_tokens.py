"""``WithContextTokens``: part of the budget spent on spatially uniform tokens and one summary token
(the counting remedies of docs/counting.md), against a plain reference and on a real LLaVA's input."""

import pytest
import torch

from visprune import PruneConfig
from visprune import testing as T
from visprune.scoring.context import ScoreContext
from visprune.scoring.scorers.context_tokens import WithContextTokens

from helpers import pruned_selection


def _reference(scores: list[float], k: int, uniform: int, summary: bool):
    """(kept, summary slot): the top k - uniform - summary by score, then uniform samples spread evenly
    (rounded linspace) over the rest in raster order, then the best-ranked token left as the summary."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: -scores[i])
    n_sum = int(summary)
    top = order[: k - uniform - n_sum]
    rest = sorted(order[k - uniform - n_sum :])
    picks = [rest[round(j * (len(rest) - 1) / (uniform - 1))] for j in range(uniform)] if uniform > 1 else rest[:uniform]
    slot = next(i for i in order[k - uniform - n_sum :] if i not in picks) if summary else None
    return sorted(top + picks + ([slot] if summary else [])), slot


@pytest.mark.parametrize("uniform,summary", [(0, True), (3, False), (3, True), (1, True)])
def test_selection_and_summary_equal_the_reference(uniform, summary):
    g = torch.Generator().manual_seed(3)
    n, k = 40, 9
    feats = torch.randn(1, n, 5, generator=g)
    saliency = torch.rand(1, n, generator=g)
    ctx = ScoreContext(features=feats, valid=torch.ones(1, n, dtype=torch.bool),
                       protected=torch.zeros(1, n, dtype=torch.bool), config=PruneConfig(scorer="cls", k=k),
                       saliency=saliency)
    scorer = WithContextTokens("cls", uniform=uniform, summary=summary)
    kept = scorer.select(ctx, scorer(ctx), torch.tensor([k]))[0]
    want, slot = _reference(saliency[0].tolist(), k, uniform, summary)
    assert kept.tolist() == want
    merged = scorer.merge(ctx, [kept])
    if not summary:
        assert merged is None
        return
    dropped = sorted(set(range(n)) - set(want)) + [slot]
    for j, i in enumerate(want):
        expect = feats[0, dropped].mean(0) if i == slot else feats[0, i]
        assert torch.allclose(merged[0][j], expect, atol=1e-6)


@torch.no_grad()
def test_the_language_model_receives_the_kept_tokens_and_the_summary_of_the_dropped():
    model, proc = T.llava()
    inputs = proc(images=T.images(1), text=[T.prompt("how many circles ?")], return_tensors="pt")
    full = model.model.get_image_features(pixel_values=inputs["pixel_values"], return_dict=True).pooler_output[0]
    seen = {}

    def grab(_m, _a, kw):
        seen.setdefault("embeds", kw["inputs_embeds"].clone())

    hook = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    sel = pruned_selection(model, proc, inputs, PruneConfig(scorer=WithContextTokens("cls", uniform=2, summary=True),
                                                            k=6), hooks=[hook])
    kept = sel.kept[0]
    assert len(kept) == 6
    image_id = model.config.image_token_id
    ids = inputs["input_ids"][0]
    start = int((ids == image_id).nonzero()[0])
    got = seen["embeds"][0, start : start + 6]
    dropped = torch.ones(len(full), dtype=torch.bool)
    dropped[kept] = False
    summaries = [j for j in range(6) if not torch.allclose(got[j], full[kept[j]], atol=1e-5)]
    assert len(summaries) == 1  # one token carries the summary ...
    j = summaries[0]
    dropped[kept[j]] = True  # ... the mean of every dropped token, its own included
    assert torch.allclose(got[j], full[dropped].mean(0), atol=1e-5)


def test_bad_settings_and_bases_are_refused():
    for kw, message in [({"uniform": -1}, "uniform must be"), ({"uniform": True}, "uniform must be"),
                        ({"summary": 1}, "summary must be")]:
        with pytest.raises(ValueError, match=message):
            WithContextTokens("cls", **kw)
    for base in ("fastv", "divprune", "visionzip"):
        with pytest.raises(TypeError, match="needs a top-k scorer"):
            WithContextTokens(base)
