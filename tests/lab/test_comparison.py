"""The experiment's paired comparisons against scratch and their report, from run records."""

import pytest

from hpt_kit.lab.comparison import comparison_markdown, paired_comparisons, pooled_rate, verdict
from hpt_kit.lab.experiment import markdown


def run(method, seed, successes, target="robosuite-ur5e"):
    return {"target": target, "demos": 4, "method": method, "seed": seed, "successes": successes,
            "success_rate": sum(successes) / len(successes)}


def runs_of(scratch, frozen):
    return [run("scratch", s, o) for s, o in enumerate(scratch)] + [run("frozen", s, o) for s, o in enumerate(frozen)]


def test_pairs_are_episodes_of_the_same_seed_pooled_over_seeds():
    # Cavo et al.'s table spread over two seeds: 59 both, 6 frozen only, 16 scratch only, 80 neither.
    frozen = [[True] * 59 + [True] * 6, [False] * 16 + [False] * 80]
    scratch = [[True] * 59 + [False] * 6, [True] * 16 + [False] * 80]
    (row,) = paired_comparisons(runs_of(scratch, frozen), [("robosuite-ur5e", 4)], ["scratch", "frozen"])
    assert (row["method"], row["versus"], row["seeds"], row["pairs"]) == ("frozen", "scratch", [0, 1], 161)
    assert (row["method_only"], row["baseline_only"]) == (6, 16)
    assert [round(x, 4) for x in row["ci95"]] == [-0.1186, -0.0046] and row["resolved"]
    # Seed 0 favours frozen, seed 1 scratch: resampling the seeds spans both, so the seed-level
    # interval includes 0, is the stricter one, and the verdict says the data do not resolve it.
    low, high = row["seed_ci95"]
    assert low < row["ci95"][0] and low < 0 < high and not row["seed_resolved"]
    assert row["verdict"] == {"interval": "seed bootstrap", "ci95": [low, high], "resolved": False}
    text = verdict(row)
    assert "95% intervals: paired episodes -11.9 to -0.5, seed bootstrap" in text
    assert "not resolved: the stricter interval, seed bootstrap, includes 0" in text


def test_the_verdict_rests_on_the_paired_interval_when_seeds_agree():
    """Three seeds with the same 4 wins of 20 each: the seed bootstrap is narrower than Newcombe's
    paired interval, which is then the stricter and resolves it."""
    frozen = [[True] * 4 + [False] * 16] * 3
    scratch = [[False] * 20] * 3
    (row,) = paired_comparisons(runs_of(scratch, frozen), [("robosuite-ur5e", 4)], ["scratch", "frozen"])
    assert row["seed_ci95"][0] > row["ci95"][0] > 0
    assert row["verdict"] == {"interval": "paired episodes", "ci95": row["ci95"], "resolved": True}
    assert "resolved: frozen is better than scratch (the stricter interval, paired episodes, excludes 0)" in verdict(row)


def test_an_interval_that_includes_zero_is_called_unresolved():
    frozen = [[True, True, False, True, False]]
    scratch = [[True, False, False, True, False]]
    (row,) = paired_comparisons(runs_of(scratch, frozen), [("robosuite-ur5e", 4)], ["scratch", "frozen"])
    assert row["difference"] == pytest.approx(0.2) and row["ci95"][0] < 0 < row["ci95"][1]
    text = verdict(row)
    assert text.startswith("robosuite-ur5e with 4 demonstrations, frozen vs scratch: +20.0 points (95% intervals")
    assert "not resolved: the stricter interval" in text and "frozen alone solved 1, scratch alone 0" in text
    assert "with one seed the seed bootstrap only resamples episodes" in text


def test_no_comparison_without_scratch_and_unequal_evaluations_are_refused():
    assert paired_comparisons(runs_of([], [[True]]), [("robosuite-ur5e", 4)], ["frozen"]) == []
    assert comparison_markdown([]) == []
    with pytest.raises(ValueError, match="seed 0: frozen was evaluated on 2 episodes and scratch on 1"):
        paired_comparisons(runs_of([[True]], [[True, False]]), [("robosuite-ur5e", 4)], ["scratch", "frozen"])


def test_pooled_rate_has_the_wilson_interval():
    pooled = pooled_rate([{"successes": [True] * 81 + [False] * 100}, {"successes": [False] * 82}])
    assert pooled["episodes"] == 263 and [round(x, 4) for x in pooled["success_ci95"]] == [0.2553, 0.3662]


def test_the_report_shows_intervals_and_says_what_is_resolved():
    frozen, scratch = [[True] * 10], [[False] * 10]
    runs = runs_of(scratch, frozen)
    comparisons = paired_comparisons(runs, [("robosuite-ur5e", 4)], ["scratch", "frozen"])
    table = [{"target": "robosuite-ur5e", "method": m, "demos": 4, "seeds": 1, "success_mean": rate, "success_std": 0.0,
              "val_loss_mean": None, "val_loss_std": None, **pooled_rate([r for r in runs if r["method"] == m])}
             for m, rate in (("scratch", 0.0), ("frozen", 1.0))]
    result = {"settings": {"steps": 6, "batch_size": 16, "seeds": [0], "eval_episodes": 10},
              "pretrain": {"embodiments": ["mujoco-arm3"]}, "table": table, "comparisons": comparisons,
              "simulator_versions": {}}
    text = markdown(result)
    assert "| robosuite-ur5e | frozen | 4 | 100.0% ± 0.0% | 100.0% [72.2–100.0%] of 10 | n/a |" in text
    assert "| robosuite-ur5e | scratch | 4 | 0.0% ± 0.0% | 0.0% [0.0–27.8%] of 10 | n/a |" in text
    assert "## Against training from scratch" in text
    assert "resolved: frozen is better than scratch (the stricter interval, paired episodes, excludes 0)" in text
    assert "seed bootstrap +100.0 to +100.0" in text  # every pair the same difference: a degenerate interval


def test_cells_with_other_demonstration_counts_are_compared_apart():
    runs = runs_of([[False] * 4], [[True] * 4]) + [
        {**run("scratch", 0, [True] * 4), "demos": 20}, {**run("frozen", 0, [True] * 4), "demos": 20}]
    rows = paired_comparisons(runs, [("robosuite-ur5e", 4), ("robosuite-ur5e", 20)], ["scratch", "frozen"])
    assert [(r["demos"], r["difference"], r["pairs"]) for r in rows] == [(4, 1.0, 4), (20, 0.0, 4)]
