"""The scaling study's skeleton through the real command, at a size that runs in about a minute."""

import json
import os
import subprocess

import pytest

from hpt_kit.core.recipe import parse_recipe
from hpt_kit.lab.scaling import ScalingSection, points
from tests.conftest import HPT_KIT, ROOT

pytestmark = pytest.mark.slow

RECIPE = """
[trunk]
preset = "tiny"

[[datasets]]
embodiment = "mujoco-arm3"
episodes = 6

[[datasets]]
embodiment = "mujoco-arm4"
episodes = 6

[train]
steps = 4
batch_size = 8
warmup_steps = 1
val_every = 4
val_batches = 1
checkpoint_every = 4
log_every = 2
device = "cpu"
"""


def test_scaling_study_smoke(tmp_path):
    (tmp_path / "base.toml").write_text(RECIPE)
    spec = tmp_path / "scaling.toml"
    spec.write_text('[scaling]\npretrain = "base.toml"\ndatasets = [1, 2]\nepisodes = [3]\ntrunks = ["tiny", "small"]\n'
                    "seeds = [0, 1]\nheldout_episodes = 3\n")
    out = tmp_path / "out"
    run = subprocess.run([HPT_KIT, "experiment", "scaling", spec, "--out", out, "--scale", "0.5"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    rows = {(r["axis"], r["value"]): r for r in result["table"]}
    assert set(rows) == {("datasets", 1), ("datasets", 2), ("episodes", 3), ("trunk", "tiny"), ("trunk", "small")}
    assert all(r["seeds"] == 2 and r["heldout_loss_mean"] > 0 and r["heldout_loss_std"] >= 0 for r in rows.values())
    assert result["probe"] == "mujoco-arm3" and result["heldout"]["episodes"] == 3
    assert result["settings"]["steps_per_point"] == 2  # the recipe's 4 steps at --scale 0.5
    latest = out / "runs" / "d1-eall-tiny-seed0" / "checkpoints" / "latest" / "checkpoint.json"
    assert json.loads(latest.read_text())["step"] == 2
    # the base point (both datasets, all episodes, tiny trunk) is on two axes and trained once per seed
    assert rows[("datasets", 2)]["heldout_loss_mean"] == rows[("trunk", "tiny")]["heldout_loss_mean"]
    assert len(list((out / "runs").iterdir())) == 4 * 2
    seeds = [r["heldout_loss"] for r in result["runs"] if r["axis"] == "datasets" and r["value"] == 1]
    assert len(seeds) == 2 and seeds[0] != seeds[1]  # seeds train different networks
    for axis in ("datasets", "episodes", "trunk"):
        assert (out / f"scaling_{axis}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| trunk | small | 2 |" in (out / "results.md").read_text()


def test_points_vary_one_axis_and_refuse_what_the_recipe_cannot_give():
    base = parse_recipe({"datasets": [{"embodiment": "a", "episodes": 6}, {"embodiment": "b", "episodes": 6}]}, "test")
    got = points(ScalingSection(datasets=(1,), episodes=(3,), trunks=("base",)), base)
    assert [(a, v) for a, v, _ in got] == [("datasets", 1), ("episodes", 3), ("trunk", "base")]
    assert [d.embodiment for d in got[0][2].datasets] == ["a"]
    assert {d.max_episodes for d in got[1][2].datasets} == {3} and got[2][2].trunk.preset == "base"
    with pytest.raises(ValueError, match="3 datasets asked for, the recipe has 2"):
        points(ScalingSection(datasets=(3,)), base)
    with pytest.raises(ValueError, match="7 episodes asked for, the recipe's datasets have 6"):
        points(ScalingSection(episodes=(7,)), base)
    with pytest.raises(ValueError, match="give at least one axis"):
        ScalingSection()


def _study(spec, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the study's thread count: one, as each fanned-out worker's
    run = subprocess.run([HPT_KIT, *map(str, ("experiment", "scaling", spec, "--out", out, "--scale", "0.5", *extra))],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), " ".join(run.stderr.split())


def test_fanned_out_pretrainings_give_the_sequential_results(tmp_path):
    (tmp_path / "base.toml").write_text(RECIPE)
    spec = tmp_path / "scaling.toml"
    spec.write_text('[scaling]\npretrain = "base.toml"\ndatasets = [1, 2]\nseeds = [0]\nheldout_episodes = 3\n')
    sequential, _ = _study(spec, tmp_path / "one")
    fanned, said = _study(spec, tmp_path / "two", "--run-workers", 2)
    assert "2 pre-trainings on 2 local processes, 1 thread(s) each" in said
    assert fanned["runs"] == sequential["runs"] and fanned["table"] == sequential["table"]
    assert [r["run_dir"] for r in fanned["runs"]] == ["runs/d1-eall-tiny-seed0", "runs/d2-eall-tiny-seed0"]
    assert fanned["heldout"]["path"] == "heldout/mujoco-arm3.zarr" and fanned["settings"]["threads"] == 1  # inside OUT: relative
    assert len({r["heldout_loss"] for r in fanned["runs"]}) == 2  # two networks, not one score twice
