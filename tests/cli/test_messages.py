"""What the commands say: every error in one form and one exit status; a training run written to a
log shows its conversion and its steps as they happen, each validation once with its step; warnings
for a plan that will not happen as written; `info` counts parameters as training does."""

from __future__ import annotations

import json
import os
import subprocess

from hpt_kit.core.overrides import load_recipe
from hpt_kit.data.store import Dataset
from hpt_kit.train.loop import plan_warnings
from tests.conftest import HPT_KIT, ROOT


def hpt(*args, env=None):
    return subprocess.run([HPT_KIT, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env or os.environ)


def test_every_error_is_one_line_with_one_exit_status(tmp_path):
    for args in (
        ("pretrain", "--bogus"),  # click's usage error
        ("transfer", "--embodiment", "mujoco-arm4", "--from-scratch", "--freeze-trunk"),  # a bad value
        ("eval", tmp_path / "missing"),  # the kit's own error
    ):
        out = hpt(*args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (args, out.stderr)
        assert "(see hpt-kit" in out.stderr or args[0] == "eval"  # a usage error says where the help is


def test_a_logged_run_shows_its_progress_warnings_and_fresh_validation(tmp_path, data_root):
    run = tmp_path / "run"
    out = hpt("pretrain", "recipes/smoke.toml", "--out", run, "--steps", 4, "--threads", 1,
              "--set", "datasets[0].episodes=20", "--set", "train.log_every=1", "--set", "train.val_every=2")
    assert out.returncode == 0, out.stderr
    err = out.stderr
    assert "convert mujoco-arm3: 20/20" in err  # off a terminal, conversion prints plain lines
    assert "train.warmup_steps 5 >= train.steps 4" in err
    assert [line.split("validation")[0].strip() for line in err.splitlines() if "validation mujoco" in line] == ["step 2/4", "step 4/4"]
    assert not [line for line in err.splitlines() if line.startswith("step ") and "loss" in line and "val" in line]
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert start["threads"] == 1
    info = json.loads(hpt("info", run, "--json").stdout)
    assert info["parameters"]["total"] == start["parameters"]  # the normaliser statistics are not parameters
    # A dataset holding fewer episodes than the recipe asks of it is trained on, with a warning.
    recipe = load_recipe(ROOT / "recipes/smoke.toml", ["datasets[0].episodes=40", "datasets[0].max_episodes=30"])
    data = {"mujoco-arm3": Dataset(data_root / "mujoco-arm3.zarr")}
    [warning] = plan_warnings(recipe, data)
    assert "datasets[0].episodes = 40 but" in warning and "holds 20 episodes" in warning and "--episodes 40 --overwrite" in warning
