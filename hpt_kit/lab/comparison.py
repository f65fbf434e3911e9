"""Paired comparisons of an experiment's methods against training from scratch.

For a target, a method's run with seed s and scratch's run with seed s were evaluated on the same
episodes (the same rollout seed), so each evaluation episode is a pair: the method's outcome and
scratch's. Pooled over seeds, the pairs give the difference of success rates with Newcombe's
interval for paired proportions (:func:`hpt_kit.core.stats.paired_difference`), and the report
says in words whether it is resolved (the 95% interval excludes 0). That interval treats episodes as
independent pairs, so beside it stands a seed-level one: the cluster bootstrap of the per-episode
differences (:func:`hpt_kit.core.stats.cluster_bootstrap`: resample the training seeds, then the
episodes within each), which widens when seeds disagree. The verdict uses the stricter of the two
(the one whose end towards 0 is nearer 0, or past it) and names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpt_kit.core.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    cluster_bootstrap,
    paired_difference,
    wilson_interval,
)

BASELINE = "scratch"
EPISODES, SEEDS = "paired episodes", "seed bootstrap"  # the two intervals, as the report names them


def pooled_rate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Successes pooled over runs: the rate, its Wilson 95% interval and the episode count."""
    outcomes = [s for r in runs for s in r["successes"]]
    return {
        "episodes": len(outcomes),
        "success_pooled": sum(outcomes) / len(outcomes) if outcomes else 0.0,
        "success_ci95": list(wilson_interval(sum(outcomes), len(outcomes))),
    }


def paired_comparisons(
    runs: Sequence[dict[str, Any]], cells: Sequence[tuple[str, int]], methods: Sequence[str]
) -> list[dict[str, Any]]:
    """Per target and number of demonstrations (a cell), each method against scratch over the seeds
    both ran (episode by episode)."""
    rows = []
    for target, demos in cells:
        here = [r for r in runs if r["target"] == target and r.get("demos") == demos]
        baseline = {r["seed"]: r for r in here if r["method"] == BASELINE}
        for method in methods:
            if method == BASELINE or not baseline:
                continue
            mine = {r["seed"]: r for r in here if r["method"] == method}
            seeds = sorted(set(mine) & set(baseline))
            a, b, clusters = [], [], []
            for seed in seeds:
                ours, theirs = mine[seed]["successes"], baseline[seed]["successes"]
                if len(ours) != len(theirs):
                    raise ValueError(
                        f"{target}, seed {seed}: {method} was evaluated on {len(ours)} episodes and "
                        f"{BASELINE} on {len(theirs)}; a paired comparison needs the same episodes"
                    )
                a += ours
                b += theirs
                clusters.append([float(x) - float(y) for x, y in zip(ours, theirs)])
            d = paired_difference(a, b)
            by_seed = cluster_bootstrap(clusters) if clusters and all(clusters) else None
            seed_ci = [by_seed.low, by_seed.high] if by_seed else [-1.0, 1.0]
            rows.append(
                {
                    "target": target,
                    "demos": demos,
                    "method": method,
                    "versus": BASELINE,
                    "seeds": seeds,
                    "pairs": d.n,
                    "method_rate": d.a_rate,
                    "baseline_rate": d.b_rate,
                    "difference": d.difference,
                    "ci95": [d.low, d.high],
                    "method_only": d.a_only,
                    "baseline_only": d.b_only,
                    "resolved": d.resolved,
                    "interval": "Newcombe square-and-add, paired (method 10)",
                    "seed_ci95": seed_ci,
                    "seed_resolved": seed_ci[0] > 0 or seed_ci[1] < 0,
                    "seed_interval": f"cluster bootstrap, seeds then episodes within them ({BOOTSTRAP_RESAMPLES} "
                                     f"resamples, bootstrap seed {BOOTSTRAP_SEED}, percentile)",
                    "verdict": stricter(d.difference, [d.low, d.high], seed_ci),
                }
            )
    return rows


def stricter(difference: float, episodes: list[float], seeds: list[float]) -> dict[str, object]:
    """The interval the verdict rests on: of the two, the one whose end towards 0 is nearer 0 (or
    past it); the paired-episode one on a tie."""
    towards_zero = (lambda ci: ci[0]) if difference >= 0 else (lambda ci: -ci[1])
    name, ci = (SEEDS, seeds) if towards_zero(seeds) < towards_zero(episodes) else (EPISODES, episodes)
    return {"interval": name, "ci95": ci, "resolved": ci[0] > 0 or ci[1] < 0}


def verdict(row: dict[str, Any]) -> str:
    """One comparison in words: the difference, both intervals, and whether the stricter resolves it."""
    low, high = row["ci95"]
    points = f"{100 * row['difference']:+.1f} points (95% interval {100 * low:+.1f} to {100 * high:+.1f}"
    chosen = row.get("verdict")
    if chosen:  # results from before the seed-level interval have neither
        s_low, s_high = row["seed_ci95"]
        points = (f"{100 * row['difference']:+.1f} points (95% intervals: {EPISODES} {100 * low:+.1f} to {100 * high:+.1f}, "
                  f"{SEEDS} {100 * s_low:+.1f} to {100 * s_high:+.1f}")
    points += ")"
    counts = (f"{row['pairs']} paired episodes over {len(row['seeds'])} seed(s); {row['method']} alone solved "
              f"{row['method_only']}, {row['versus']} alone {row['baseline_only']}")
    if len(row["seeds"]) == 1 and chosen:
        counts += "; with one seed the seed bootstrap only resamples episodes"
    resolved = chosen["resolved"] if chosen else row["resolved"]
    which = f"the stricter interval, {chosen['interval']}," if chosen else "the interval"
    if not resolved:
        word = f"not resolved: {which} includes 0, so these runs do not tell the two apart"
    elif row["difference"] > 0:
        word = f"resolved: {row['method']} is better than {row['versus']} ({which} excludes 0)"
    else:
        word = f"resolved: {row['method']} is worse than {row['versus']} ({which} excludes 0)"
    where = f"{row['target']} with {row['demos']} demonstrations" if "demos" in row else row["target"]
    return f"{where}, {row['method']} vs {row['versus']}: {points}, {word} ({counts})."


def comparison_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The report's section on the comparisons, one line each."""
    if not rows:
        return []
    lines = [
        "## Against training from scratch",
        "",
        "Success rate of each method minus scratch's on the same evaluation episodes (same seeds), with "
        f"two 95% intervals: {EPISODES} (Newcombe's for paired proportions, which counts episodes as "
        f"independent pairs) and {SEEDS} (resampling the training seeds, then the episodes within "
        f"them, {BOOTSTRAP_RESAMPLES} times from bootstrap seed {BOOTSTRAP_SEED}; it widens when seeds "
        "disagree). A difference is resolved when the stricter of the two, named in each line, excludes 0.",
        "",
    ]
    lines += [f"- {verdict(r)}" for r in rows]
    return lines + [""]
