"""The demonstrations sweep of the transfer experiment: its settings, run folders and plot."""

import pytest

from hpt_kit.core.recipe import RecipeError
from hpt_kit.lab.experiment import cells, load_experiment, plot_sweep, run_dir_of, summarize
from hpt_kit.lab.comparison import pooled_rate


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
