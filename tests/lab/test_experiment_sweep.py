"""The demonstrations sweep of the transfer experiment: its settings, run folders and plot."""

import math

import numpy as np
import pytest

from hpt_kit.core.recipe import RecipeError
from hpt_kit.lab.comparison import pooled_rate
from hpt_kit.lab.experiment import cells, load_experiment, plot_sweep, run_dir_of, summarize


def write(tmp_path, body):
    path = tmp_path / "experiment.toml"
    path.write_text("[experiment]\n" + body)
    return path


def test_demos_is_a_count_or_a_sweep_per_experiment_and_per_target(tmp_path):
    section = load_experiment(write(tmp_path, """demos = [5, 10]
[[experiment.targets]]
embodiment = "mujoco-arm4"
episodes = 30
[[experiment.targets]]
embodiment = "robosuite-ur5e"
episodes = 30
demos = 20
"""))
    assert section.demos == (5, 10)
    assert cells(section) == [("mujoco-arm4", 5), ("mujoco-arm4", 10), ("robosuite-ur5e", 20)]
    single = load_experiment(write(tmp_path, 'demos = 7\n[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n'))
    assert cells(single) == [("mujoco-arm4", 7)]
    swept = load_experiment(write(tmp_path, 'demos = 7\n[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n'),
                            ["experiment.demos=[2, 4]"])
    assert cells(swept) == [("mujoco-arm4", 2), ("mujoco-arm4", 4)]
    assert run_dir_of(tmp_path, "mujoco-arm4", 4, "frozen", 1) == tmp_path / "runs" / "mujoco-arm4" / "K4" / "frozen-seed1"


@pytest.mark.parametrize(
    "demos, message",
    [("[5, 5]", "distinct counts >= 1"), ("[0]", "distinct counts >= 1"), ("[]", "distinct"), ("[40]", "only 30 episodes")],
)
def test_impossible_sweeps_are_refused_naming_the_file(tmp_path, demos, message):
    path = write(tmp_path, f'demos = {demos}\n[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n')
    with pytest.raises((RecipeError, ValueError), match=message):
        load_experiment(path)


def test_the_table_has_a_row_per_target_count_and_method_and_the_sweep_plots(tmp_path):
    section = load_experiment(write(tmp_path, 'demos = [2, 8]\nmethods = ["scratch", "frozen"]\nseeds = [0]\n'
                                              '[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n'))
    runs = [{"target": "mujoco-arm4", "demos": k, "method": m, "seed": 0, "successes": [k == 8, m == "frozen"],
             "success_rate": ((k == 8) + (m == "frozen")) / 2, "final_val_loss": 0.1}
            for k in (2, 8) for m in ("scratch", "frozen")]
    table = summarize(runs, section)
    assert [(r["demos"], r["method"], r["success_pooled"]) for r in table] == [
        (2, "scratch", 0.0), (2, "frozen", 0.5), (8, "scratch", 0.5), (8, "frozen", 1.0)]
    assert table[0]["success_ci95"] == pooled_rate([runs[0]])["success_ci95"]
    plot_sweep(table, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_validation_plot_averages_seeds_that_validate_at_other_steps(tmp_path):
    from hpt_kit.lab.experiment import mean_curve, plot

    curves = [[[29, 1.0], [58, 0.5], [87, 0.2]], [[28, 3.0], [56, 1.5], [84, 0.4], [112, 0.1]]]  # budgets 290, 288
    steps, mean, std = mean_curve(curves)
    assert steps == [28, 57, 86]  # the i-th validations together, at their mean step; cut to the shortest
    assert mean.tolist() == [2.0, 1.0, 0.30000000000000004] and std.tolist()[0] == 1.0
    section = load_experiment(write(tmp_path, 'demos = 10\nmethods = ["scratch"]\nseeds = [0, 1]\n'
                                              '[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n'))
    runs = [{"target": "mujoco-arm4", "demos": 10, "method": "scratch", "seed": s, "val_curve": c} for s, c in enumerate(curves)]
    plot(runs, section, tmp_path / "val.png")
    assert (tmp_path / "val.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_leave_one_out_compares_each_trunk_without_an_embodiment_with_the_full_mixture(tmp_path):
    from hpt_kit.lab.experiment import leave_one_out, leave_one_out_markdown

    section = load_experiment(write(tmp_path, 'demos = 4\nseeds = [0, 1]\nleave_out = ["metaworld", "mujoco-arm3"]\n'
                                              '[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n'))

    def run(method, seed, successes, left=None, loss=0.1):
        r = {"target": "mujoco-arm4", "demos": 4, "method": method, "seed": seed, "successes": successes, "final_val_loss": loss}
        return {**r, "left_out": left} if left else r

    full = [run(m, s, [True] * 10) for m in ("scratch", "frozen", "finetune") for s in (0, 1)]
    left = [run(m, s, [False] * 10, "metaworld", loss=0.3) for m in ("frozen", "finetune") for s in (0, 1)]
    left += [run(m, s, [True] * 9 + [False], "mujoco-arm3") for m in ("frozen", "finetune") for s in (0, 1)]
    rows = leave_one_out(full, left, section)
    assert [(r["left_out"], r["method"]) for r in rows] == [
        ("metaworld", "frozen"), ("metaworld", "finetune"), ("mujoco-arm3", "frozen"), ("mujoco-arm3", "finetune")]
    meta = rows[0]
    assert meta["seeds"] == [0, 1] and meta["pairs"] == 20 and meta["difference"] == 1.0 and meta["resolved"]
    assert meta["val_loss_change"] == pytest.approx(0.2)
    arm3 = rows[2]
    assert arm3["difference"] == pytest.approx(0.1) and not arm3["resolved"]
    text = "\n".join(leave_one_out_markdown(rows))
    assert "| metaworld | mujoco-arm4 | 4 | frozen | 0.0% | 100.0% | +100.0 (" in text and "| helped (paired episodes) |" in text
    assert "| mujoco-arm3 | mujoco-arm4 | 4 | frozen | 90.0% | 100.0% | +10.0 (" in text and "| not resolved (paired episodes) |" in text
    assert meta["seed_ci95"] == [1.0, 1.0] and "| +100.0 to +100.0 |" in text  # every pair differs by 1: degenerate


@pytest.mark.parametrize(
    "body, message",
    [('leave_out = ["a", "a"]', "twice"), ('leave_out = ["a"]\ntrunk = "runs/pre"', "cannot reuse a trunk"),
     ('leave_out = ["a"]\nmethods = ["scratch"]', "add frozen or finetune")],
)
def test_impossible_leave_outs_are_refused(tmp_path, body, message):
    path = write(tmp_path, body + '\n[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n')
    with pytest.raises((RecipeError, ValueError), match=message):
        load_experiment(path)


def test_steps_zero_gives_every_run_the_step_budget_of_its_demonstrations(tmp_path, data_root):
    """`steps = 0`: each run trains for the steps `hpt-kit transfer --episodes K` would choose, from a
    real dataset converted on the spot; `--scale` multiplies them; a fixed `steps` is used as is."""
    from hpt_kit import hookimpl
    from hpt_kit.core.recipe import TrunkSection
    from hpt_kit.core.registry import load_registry
    from hpt_kit.data.sampler import split_episodes
    from hpt_kit.data.store import Dataset
    from hpt_kit.lab.experiment import _Runs
    from tests.conftest import make_toy

    class Toys:
        @staticmethod
        @hookimpl
        def hpt_register_embodiments(registry):
            registry.add(make_toy("toy", length=12))

    registry = load_registry(load_entrypoints=False, extra_plugins=[("toys", Toys)])
    section = load_experiment(write(tmp_path, 'steps = 0\nbatch_size = 4\ndemos = [5, 10]\n'
                                              '[[experiment.targets]]\nembodiment = "toy"\nepisodes = 12\n'))
    target = section.targets[0]

    def runs(scale):
        return _Runs(registry, TrunkSection(preset="tiny"), "cpu", 1, print, None, {}, scale)

    k10 = runs(1.0).budget(section, target, 10, 0, "")
    # The dataset it converted: K = 10 trains on 8 of the first 10 episodes (0.2 validate, split with
    # the run's seed), 30 draws of each of their steps at batch 4.
    ds = Dataset(data_root / "toy.zarr")
    assert ds.num_episodes == 12
    train_eps, _ = split_episodes(10, 0.2, 0)
    lengths = np.diff(ds.episode_ends, prepend=0)
    assert len(train_eps) == 8 and k10 == math.ceil(30 * lengths[train_eps].sum() / 4) > 200
    assert runs(2.0).budget(section, target, 10, 0, "") == 2 * k10
    assert runs(1.0).budget(section, target, 5, 0, "") < k10
    fixed = load_experiment(write(tmp_path, 'steps = 77\ndemos = 10\n[[experiment.targets]]\nembodiment = "toy"\nepisodes = 12\n'))
    assert runs(1.0).budget(fixed, fixed.targets[0], 10, 0, "") == 77


def test_only_the_fine_tuned_runs_take_the_trunk_learning_rate_scale(tmp_path):
    from hpt_kit.core.recipe import TrunkSection
    from hpt_kit.lab.experiment import transfer_recipe

    section = load_experiment(write(tmp_path, 'trunk_lr_scale = 0.1\n[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n'))
    made = {m: transfer_recipe(section, TrunkSection(), "cpu", section.targets[0], 20, m, 0, "pre", 300).transfer for m in
            ("scratch", "frozen", "finetune")}
    assert {m: t.trunk_lr_scale for m, t in made.items()} == {"scratch": 1.0, "frozen": 1.0, "finetune": 0.1}
    assert made["finetune"].freeze_trunk is False and made["frozen"].freeze_trunk is True and made["scratch"].from_scratch
    with pytest.raises(ValueError, match="trunk_lr_scale must be a finite number > 0"):
        load_experiment(write(tmp_path, 'trunk_lr_scale = 0\n[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n'))


def test_the_report_says_which_steps_and_learning_rates_the_runs_had(tmp_path):
    import dataclasses

    from hpt_kit.lab.experiment import markdown

    section = load_experiment(write(tmp_path, 'steps = 0\ndemos = [5, 10]\nmethods = ["scratch"]\nseeds = [0, 1]\ntrunk_lr_scale = 0.1\n'
                                              '[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n'))
    runs = [{"target": "mujoco-arm4", "demos": k, "method": "scratch", "seed": s, "steps": steps, "successes": [True],
             "success_rate": 1.0, "final_val_loss": 0.1} for k, s, steps in ((5, 0, 200), (5, 1, 200), (10, 0, 290), (10, 1, 310))]
    result = {"pretrain": {"embodiments": ["mujoco-arm3"]}, "settings": dataclasses.asdict(section), "runs": runs,
              "table": summarize(runs, section), "simulator_versions": {}}
    text = markdown(result)
    assert "the step budget of each run (mujoco-arm4 K=5: 200; mujoco-arm4 K=10: 290-310 steps)" in text
    assert "lr 0.001 (fine-tuned trunk x0.1)" in text
    result["settings"] = {**result["settings"], "steps": 300, "trunk_lr_scale": 1.0}
    assert "Transfer: 300 steps, batch 64, lr 0.001, seeds" in markdown(result)
