"""The success-rate intervals against published values."""

import pytest

from hpt_kit.core.stats import format_rate, paired_difference, wilson_interval


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
