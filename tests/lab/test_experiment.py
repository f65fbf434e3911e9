"""A smoke run of the transfer experiment through the real command: table, JSON and plot."""

import json
import subprocess

import pytest

from hpt_kit.core.recipe import EvalSection
from tests.conftest import HPT_KIT, ROOT
from tests.lab.conftest import write_experiment

pytestmark = pytest.mark.slow


def test_transfer_experiment_smoke(tmp_path):
    spec = write_experiment(tmp_path / "experiment.toml", steps=6)
    out = tmp_path / "out"
    run = subprocess.run([HPT_KIT, "experiment", "transfer", spec, "--out", out], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    rows = {(r["target"], r["method"]): r for r in result["table"]}
    assert set(rows) == {("mujoco-arm4", m) for m in ("scratch", "frozen", "finetune")}
    for r in rows.values():
        assert 0 <= r["success_mean"] <= 1 and r["val_loss_mean"] > 0 and r["seeds"] == 1
    assert result["simulator_versions"]["mujoco-arm4"]["mujoco_version"]
    assert result["pretrain"]["embodiments"] == ["mujoco-arm3"]
    runs = {r["method"]: r for r in result["runs"]}
    frozen = json.loads((out / "runs" / "mujoco-arm4" / "K4" / "frozen-seed0" / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert frozen["frozen_trunk"] is True and runs["scratch"]["val_curve"]
    scratch = json.loads((out / "runs" / "mujoco-arm4" / "K4" / "scratch-seed0" / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert scratch["trunk"] == frozen["trunk"]  # same architecture, random trunk, recorded as the baseline
    assert scratch["mode"] == "transfer" and scratch["from_scratch"] is True and scratch["frozen_trunk"] is False
    assert "trunk_source" not in scratch
    # One set of evaluation settings: `hpt-kit eval` of a run repeats the experiment's rollouts.
    assert runs["frozen"]["eval"] == {"episodes": 2, "seed": EvalSection().seed}
    assert runs["frozen"]["run_dir"] == "runs/mujoco-arm4/K4/frozen-seed0"  # relative to OUT: the folder can move
    again = subprocess.run([HPT_KIT, "eval", out / runs["frozen"]["run_dir"], "--json"], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    again = json.loads(again.stdout)
    assert (again["episodes"], again["seed"]) == (2, EvalSection().seed)
    assert again["settings_from"]["episodes"] == "recipe" and again["success_rate"] == runs["frozen"]["success_rate"]
    assert (out / "val_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| mujoco-arm4 | frozen | 4 |" in (out / "results.md").read_text()

    # A second experiment reuses the pre-trained trunk instead of pre-training again.
    reuse = tmp_path / "reuse.toml"
    reuse.write_text(spec.read_text().replace("[experiment]\n", f'[experiment]\ntrunk = "{out / "pretrain"}"\nmethods = ["frozen"]\n'))
    out2 = tmp_path / "out2"
    run = subprocess.run([HPT_KIT, "experiment", "transfer", reuse, "--out", out2], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result2 = json.loads((out2 / "results.json").read_text())
    assert not (out2 / "pretrain").exists() and result2["pretrain"]["reused"] is True
    assert result2["pretrain"]["embodiments"] == ["mujoco-arm3"]
    frozen2 = json.loads((out2 / "runs" / "mujoco-arm4" / "K4" / "frozen-seed0" / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert frozen2["trunk_source_sha256"] == frozen["trunk_source_sha256"]
    for r in result["runs"]:  # every rate with its interval, and the episodes it came from
        assert len(r["successes"]) == 2 and r["success_ci95"][0] <= r["success_rate"] <= r["success_ci95"][1]
    for r in rows.values():
        assert r["episodes"] == 2 and r["success_ci95"][0] <= r["success_pooled"] <= r["success_ci95"][1]
    compared = {c["method"]: c for c in result["comparisons"]}
    assert set(compared) == {"frozen", "finetune"} and all(c["pairs"] == 2 and c["versus"] == "scratch" for c in compared.values())
    assert "## Against training from scratch" in (out / "results.md").read_text()


def test_leave_one_out_smoke(tmp_path):
    """`leave_out` pre-trains once more without each named embodiment and transfers again."""
    (tmp_path / "pre.toml").write_text(
        (ROOT / "recipes" / "smoke.toml").read_text().replace("steps = 40", "steps = 6")
        + '\n[[datasets]]\nembodiment = "metaworld-reach-v3"\nepisodes = 3\n'
    )
    spec = tmp_path / "experiment.toml"
    spec.write_text(
        """
[experiment]
pretrain = "pre.toml"
methods = ["scratch", "frozen"]
seeds = [0]
demos = 4
steps = 4
batch_size = 16
eval_episodes = 2
leave_out = ["metaworld-reach-v3"]

[[experiment.targets]]
embodiment = "mujoco-arm4"
episodes = 6
"""
    )
    out = tmp_path / "out"
    run = subprocess.run([HPT_KIT, "experiment", "transfer", spec, "--out", out], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    without = json.loads((out / "without" / "metaworld-reach-v3" / "pretrain" / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert list(without["embodiments"]) == ["mujoco-arm3"]  # the mixture less the left-out embodiment
    assert [(r["method"], r["left_out"]) for r in result["left_out_runs"]] == [("frozen", "metaworld-reach-v3")]
    frozen = json.loads((out / "without" / "metaworld-reach-v3" / "runs" / "mujoco-arm4" / "K4" / "frozen-seed0" / "checkpoints"
                         / "latest" / "checkpoint.json").read_text())
    assert frozen["trunk_source_path"].startswith(str(out / "without" / "metaworld-reach-v3" / "pretrain"))
    (row,) = result["leave_one_out"]
    assert (row["left_out"], row["method"], row["pairs"]) == ("metaworld-reach-v3", "frozen", 2)
    assert "## Which pre-training data helped" in (out / "results.md").read_text()
