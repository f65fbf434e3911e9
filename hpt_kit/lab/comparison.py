"""Paired comparisons of an experiment's methods against training from scratch.

For a target, a method's run with seed s and scratch's run with seed s were evaluated on the same
episodes (the same rollout seed), so each evaluation episode is a pair: the method's outcome and
scratch's. Pooled over seeds, the pairs give the difference of success rates with Newcombe's
interval for paired proportions (:func:`hpt_kit.core.stats.paired_difference`), and the report
says in words whether it is resolved (the 95% interval excludes 0). The interval treats episodes as
independent pairs; the spread over training seeds is reported beside it (the runs' rates).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpt_kit.core.stats import paired_difference, wilson_interval

BASELINE = "scratch"


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
            a, b = [], []
            for seed in seeds:
                ours, theirs = mine[seed]["successes"], baseline[seed]["successes"]
                if len(ours) != len(theirs):
                    raise ValueError(
                        f"{target}, seed {seed}: {method} was evaluated on {len(ours)} episodes and "
                        f"{BASELINE} on {len(theirs)}; a paired comparison needs the same episodes"
                    )
                a += ours
                b += theirs
            d = paired_difference(a, b)
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
                }
            )
    return rows


def verdict(row: dict[str, Any]) -> str:
    """One comparison in words: the difference, its interval, and whether it is resolved."""
    low, high = row["ci95"]
    points = f"{100 * row['difference']:+.1f} points (95% interval {100 * low:+.1f} to {100 * high:+.1f})"
    counts = (f"{row['pairs']} paired episodes over {len(row['seeds'])} seed(s); {row['method']} alone solved "
              f"{row['method_only']}, {row['versus']} alone {row['baseline_only']}")
    if not row["resolved"]:
        word = "not resolved: the interval includes 0, so these episodes do not tell the two apart"
    elif row["difference"] > 0:
        word = f"resolved: {row['method']} is better than {row['versus']} (the interval excludes 0)"
    else:
        word = f"resolved: {row['method']} is worse than {row['versus']} (the interval excludes 0)"
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
        "Newcombe's 95% interval for paired proportions; a difference is resolved when its interval "
        "excludes 0. The interval counts episodes as independent pairs and does not widen for "
        "differences between training seeds.",
        "",
    ]
    lines += [f"- {verdict(r)}" for r in rows]
    return lines + [""]
