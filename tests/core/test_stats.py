"""The success-rate intervals against published values."""

import numpy as np
import pytest

from hpt_kit.core.stats import Z95, cluster_bootstrap, format_rate, paired_difference, wilson_interval


@pytest.mark.parametrize(
    "successes,n,low,high",
    [  # Newcombe (1998a), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe_1998(successes, n, low, high):
    lo, hi = wilson_interval(successes, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_interval_is_symmetric_and_stays_in_the_unit_interval():
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0.8 < lo < 0.85
    assert wilson_interval(3, 10) == pytest.approx(tuple(1 - x for x in reversed(wilson_interval(7, 10))))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"successes must lie in \[0, n\], got 5 of 4"):
        wilson_interval(5, 4)


def pairs(both, a_only, b_only, neither):
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return a, b


def test_paired_difference_matches_the_published_example():
    """Cavo et al. (2012) as analysed by Fagerland, Lydersen and Laake (2017), "Statistical Analysis
    of Contingency Tables", chapter 8: Newcombe square-and-add, -0.0621 (95% CI -0.1186 to -0.0046)."""
    d = paired_difference(*pairs(59, 6, 16, 80))
    assert (d.n, d.both, d.a_only, d.b_only, d.neither) == (161, 59, 6, 16, 80)
    assert round(d.difference, 4) == -0.0621
    assert (round(d.low, 4), round(d.high, 4)) == (-0.1186, -0.0046)
    assert d.resolved


def test_paired_difference_swaps_sign_with_its_arguments_and_is_unresolved_without_discordant_pairs():
    d = paired_difference(*pairs(5, 9, 2, 4))
    e = paired_difference(*reversed(pairs(5, 9, 2, 4)))
    assert (e.difference, e.low, e.high) == pytest.approx((-d.difference, -d.high, -d.low))
    same = paired_difference(*pairs(6, 0, 0, 4))
    assert same.difference == 0 and same.low < 0 < same.high and not same.resolved
    assert paired_difference([], []).low == -1.0
    with pytest.raises(ValueError, match="one entry per episode each, got 2 and 3"):
        paired_difference([True, False], [True, True, False])


def test_pairing_narrows_the_interval_when_the_policies_agree_on_most_episodes():
    """Same rates (70% against 40% over 30 episodes); agreeing on most episodes is stronger evidence
    than the same rates with outcomes unrelated."""
    agreeing = paired_difference(*pairs(12, 9, 0, 9))
    unrelated = paired_difference(*pairs(8, 13, 4, 5))
    assert agreeing.difference == pytest.approx(unrelated.difference) == pytest.approx(0.3)
    assert agreeing.high - agreeing.low < unrelated.high - unrelated.low


def test_format_rate():
    assert format_rate(0.6, (0.391, 0.781)) == "60.0% [39.1–78.1%]"


def test_cluster_bootstrap_of_constant_differences_is_the_value_itself():
    """Every episode of every seed the same difference: every resample has that mean."""
    got = cluster_bootstrap([[1.0] * 50, [1.0] * 50, [1.0] * 50])
    assert (got.estimate, got.low, got.high, got.clusters) == (1.0, 1.0, 1.0, 3) and got.resolved
    got = cluster_bootstrap([[0.25] * 7, [0.25] * 30])
    assert got.low == pytest.approx(0.25) and got.high == pytest.approx(0.25)


def test_cluster_bootstrap_matches_the_normal_interval_of_its_known_variance():
    """Many clusters: the two-stage bootstrap mean's variance is known exactly, (between-cluster
    variance of the means + mean within-cluster variance / n) / clusters (both with divisor count,
    as the resampling draws), and the distribution is close to normal; its percentile interval must
    match mean +- 1.96 sd to a few percent of the half-width, and be wider than the interval that
    treats the 2,000 values as independent."""
    rng = np.random.default_rng(0)
    seeds, n = 100, 20
    effects = rng.normal(0.2, 0.1, size=seeds)  # a seed-level effect, then episode noise around it
    clusters = [e + rng.normal(0, 0.5, size=n) for e in effects]
    means = np.array([c.mean() for c in clusters])
    within = np.array([c.var() for c in clusters])
    half = Z95 * np.sqrt((means.var() + within.mean() / n) / seeds)
    got = cluster_bootstrap(clusters)
    pooled = np.concatenate(clusters)
    assert got.estimate == pytest.approx(pooled.mean())
    assert (got.high - got.low) / 2 == pytest.approx(half, rel=0.03)
    assert got.low == pytest.approx(pooled.mean() - half, abs=0.05 * half)
    assert got.high == pytest.approx(pooled.mean() + half, abs=0.05 * half)
    assert (got.high - got.low) / 2 > 1.2 * Z95 * pooled.std() / np.sqrt(pooled.size)


def test_cluster_bootstrap_widens_when_seeds_disagree_and_is_repeatable():
    """The same 150 paired differences (mean +0.2): agreeing seeds give a narrow interval that
    excludes 0; seeds that disagree (+1, -0.4, 0) give one that includes it. A fixed seed repeats."""
    agree = [[1.0] * 10 + [0.0] * 40] * 3
    disagree = [[1.0] * 50, [-1.0] * 20 + [0.0] * 30, [0.0] * 50]
    narrow, wide = cluster_bootstrap(agree), cluster_bootstrap(disagree)
    assert narrow.estimate == pytest.approx(0.2) and wide.estimate == pytest.approx(0.2)
    assert narrow.resolved and not wide.resolved and wide.high - wide.low > 3 * (narrow.high - narrow.low)
    assert cluster_bootstrap(disagree) == wide
    assert cluster_bootstrap(disagree, seed=1) != wide
    with pytest.raises(ValueError, match="no empty cluster"):
        cluster_bootstrap([[1.0], []])
