"""Bootstrap intervals: the mean's interval matches the normal approximation, paired differences rank
only what the interval separates from zero."""

import numpy as np

from visprune.evaluation.stats import mean_ci, paired_difference


def test_the_interval_of_a_proportion_matches_the_normal_approximation():
    scores = [1.0, 0.0] * 200  # p = 0.5, n = 400: 1.96 * sqrt(0.25 / 400) = 0.049 each side
    lo, hi = mean_ci(scores)
    assert lo < 0.5 < hi
    assert abs((hi - lo) / 2 - 1.96 * np.sqrt(0.25 / 400)) < 0.005


def test_constant_scores_have_a_point_interval_and_too_few_have_none():
    assert mean_ci([1.0] * 50) == [1.0, 1.0]
    assert mean_ci([1.0]) is None


def test_paired_differences_are_ties_unless_separated_from_zero():
    ids = [str(i) for i in range(300)]
    always = {i: 1.0 for i in ids}
    mostly = {i: float(k % 10 != 0) for k, i in enumerate(ids)}  # wrong on every 10th sample
    same = paired_difference(always, dict(always))
    assert same["diff"] == 0.0 and same["tie"]
    better = paired_difference(always, mostly)
    assert abs(better["diff"] - 0.1) < 1e-12 and not better["tie"] and better["ci"][0] > 0
    # one sample of difference in 300 is not enough to rank them
    nearly = dict(always, **{ids[0]: 0.0})
    assert paired_difference(always, nearly)["tie"]
    # only the samples both answered are compared
    assert paired_difference(always, {ids[0]: 1.0, ids[1]: 0.0})["n"] == 2
