"""The demonstrations sweep of the transfer experiment: its settings, run folders and plot."""

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
    assert "| metaworld | mujoco-arm4 | 4 | frozen | 0.0% | 100.0% | +100.0 (" in text and "| helped |" in text
    assert "| mujoco-arm3 | mujoco-arm4 | 4 | frozen | 90.0% | 100.0% | +10.0 (" in text and "| not resolved |" in text


@pytest.mark.parametrize(
    "body, message",
    [('leave_out = ["a", "a"]', "twice"), ('leave_out = ["a"]\ntrunk = "runs/pre"', "cannot reuse a trunk"),
     ('leave_out = ["a"]\nmethods = ["scratch"]', "add frozen or finetune")],
)
def test_impossible_leave_outs_are_refused(tmp_path, body, message):
    path = write(tmp_path, body + '\n[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n')
    with pytest.raises((RecipeError, ValueError), match=message):
        load_experiment(path)
