"""Intervals for success rates, so that no rate is shown without its uncertainty.

- :func:`wilson_interval`: the Wilson score interval for one binomial proportion (k successes in n
  episodes). Unlike the normal approximation it never leaves [0, 1] and stays honest at 0/n and
  n/n, where evaluation rates often are (Newcombe 1998a, "Two-sided confidence intervals for the
  single proportion", Statistics in Medicine 17:857-872, method 3).
- :func:`paired_difference`: the difference of two success rates measured on the same episodes
  (two policies, the same seeds), with Newcombe's square-and-add interval for paired proportions
  (Newcombe 1998b, "Improved confidence intervals for the difference between binomial proportions
  based on paired data", Statistics in Medicine 17:2635-2650, method 10; the form in Fagerland,
  Lydersen and Laake 2014, "Recommended tests and confidence intervals for paired binomial
  proportions", Statistics in Medicine 33:2850-2875). It combines the two Wilson intervals with
  the estimated correlation of the pairs, so episodes both policies solve (or both fail) narrow it
  as a paired design should. It treats the pairs as independent: pooled over training seeds it
  does not widen for seed-to-seed variation, which callers report beside it.
- :func:`cluster_bootstrap`: the mean of per-episode values grouped in clusters (episodes of one
  training seed), with a two-stage percentile bootstrap interval: resample the clusters, then the
  episodes within each drawn cluster (Davison and Hinkley 1997, "Bootstrap Methods and their
  Application", section 3.8). It widens when clusters disagree, which the paired interval cannot.

Pure Python (math only) but for the bootstrap, which imports numpy when called: the core floor,
usable anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n``; (0, 1) when ``n`` is 0 (nothing known)."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n], got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairedDifference:
    """Rate of ``a`` minus rate of ``b`` over ``n`` paired episodes, with its 95% interval.

    ``both``, ``a_only``, ``b_only`` and ``neither`` count the episodes by outcome; only the
    discordant ones (``a_only``, ``b_only``) move the difference."""

    n: int
    both: int
    a_only: int
    b_only: int
    neither: int
    a_rate: float
    b_rate: float
    difference: float
    low: float
    high: float

    @property
    def resolved(self) -> bool:
        """Whether the interval excludes 0: the data tell the two rates apart at the 95% level."""
        return self.low > 0 or self.high < 0


def paired_difference(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> PairedDifference:
    """``a``'s success rate minus ``b``'s on the same episodes (``a[i]`` and ``b[i]`` are one episode
    under each), with Newcombe's square-and-add interval for paired proportions (method 10)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes must have one entry per episode each, got {len(a)} and {len(b)}")
    n = len(a)
    both = sum(1 for x, y in zip(a, b) if x and y)
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    neither = n - both - a_only - b_only
    if n == 0:
        return PairedDifference(0, 0, 0, 0, 0, 0.0, 0.0, 0.0, -1.0, 1.0)
    a_hits, b_hits = both + a_only, both + b_only
    p1, p2 = a_hits / n, b_hits / n
    l1, u1 = wilson_interval(a_hits, n, z)
    l2, u2 = wilson_interval(b_hits, n, z)
    phi = _paired_correlation(both, a_only, b_only, neither)
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    high = d + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    return PairedDifference(n, both, a_only, b_only, neither, p1, p2, d, max(-1.0, low), min(1.0, high))


def _paired_correlation(both: int, a_only: int, b_only: int, neither: int) -> float:
    """The correlation of the paired outcomes with Newcombe's continuity correction: a positive
    cross-product difference is reduced by n/2 (to 0 at most), a negative one kept; 0 when a
    margin is empty."""
    n = both + a_only + b_only + neither
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    if margins == 0:
        return 0.0
    cross = both * neither - a_only * b_only
    if cross > n / 2:
        cross -= n / 2
    elif cross >= 0:
        cross = 0.0
    return cross / math.sqrt(margins)


def format_rate(rate: float, interval: tuple[float, float]) -> str:
    """``0.6`` and ``(0.39, 0.78)`` as ``60.0% [39.1–78.1%]``: a rate with its 95% interval."""
    return f"{rate:.1%} [{interval[0]:.1%}–{interval[1]:.1%}]".replace("%–", "–", 1)


# Student's t 97.5% quantiles for 1..30 degrees of freedom (standard tables, 3 decimals).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Student's t 97.5% quantile: the table up to 30 degrees of freedom, beyond it the
    Cornish-Fisher expansion around the normal quantile (within 1e-4 there)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df * df)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float] | None:
    """The mean of ``values`` (one per independent unit, e.g. per held-out episode) with its t
    interval (95%): (mean, low, high); None for fewer than two values, where no interval exists."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same data give the same interval, run after run


@dataclass(frozen=True)
class ClusterInterval:
    """The pooled mean of clustered values with its two-stage bootstrap interval."""

    estimate: float
    low: float
    high: float
    clusters: int
    resamples: int
    seed: int

    @property
    def resolved(self) -> bool:
        return self.low > 0 or self.high < 0


def cluster_bootstrap(
    clusters: Sequence[Sequence[float]], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = 0.95
) -> ClusterInterval:
    """The mean of all values pooled (every value weighs the same) and its percentile interval from
    ``resamples`` two-stage resamples: draw as many clusters as there are, with replacement, then in
    each drawn cluster as many of its values as it holds, with replacement. One cluster gives an
    ordinary bootstrap of its values, which cannot show spread between clusters."""
    import numpy as np

    groups = [np.asarray(c, dtype=float) for c in clusters]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError("cluster_bootstrap needs at least one cluster, and no empty cluster")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples} and {level}")
    rng = np.random.default_rng(seed)
    k = len(groups)
    drawn = rng.integers(0, k, size=(resamples, k))  # (R, k): the clusters of each resample
    total, count = np.zeros(resamples), np.zeros(resamples)
    for c, g in enumerate(groups):  # every draw of cluster c, in any resample: its values resampled
        rows = np.nonzero(drawn == c)[0]
        np.add.at(total, rows, g[rng.integers(0, g.size, size=(rows.size, g.size))].sum(axis=1))
        np.add.at(count, rows, g.size)
    means = total / count
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    estimate = float(np.concatenate(groups).mean())
    return ClusterInterval(estimate, float(low), float(high), k, resamples, seed)
