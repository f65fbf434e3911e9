"""``--set`` through the real ``hpt-kit`` command: applied before validation, recorded in the run's
``recipe.toml``, and a bad one is a one-line error naming the ``--set``."""

import json
import tomllib

from tests.cli.test_end_to_end import hpt
from tests.conftest import ROOT

SMOKE = ROOT / "recipes" / "smoke.toml"


def test_pretrain_set_is_applied_and_recorded(tmp_path):
    run = tmp_path / "run"
    hpt(
        "pretrain", SMOKE, "--out", run,
        "--set", "datasets[0].episodes=4", "--set", "train.steps=4", "--set", "train.lr=2e-3",
        "--set", "train.log_every=1", "--set", "run.name=overridden", "--set", "train.steps=3",
    )  # fmt: skip
    recorded = tomllib.loads((run / "recipe.toml").read_text())
    assert recorded["train"]["lr"] == 2e-3 and recorded["train"]["steps"] == 3
    assert recorded["run"]["name"] == "overridden" and recorded["datasets"][0]["episodes"] == 4
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3]


def test_bad_sets_are_one_line_errors(tmp_path):
    out = hpt("pretrain", SMOKE, "--out", tmp_path / "a", "--set", "train.lr=fast", check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "smoke.toml: train.lr: must be a number, got 'fast' (from --set train.lr=fast)" in out.stderr
    out = hpt("transfer", "--embodiment", "mujoco-arm4", "--trunk", tmp_path, "--set", "datasets[1].weight=2", check=False)
    assert out.returncode == 1 and "--set datasets[1].weight=2: datasets has 1 entries" in out.stderr
    out = hpt("experiment", "transfer", ROOT / "recipes" / "experiment.toml", "--set", "experiment.seeds=[]", check=False)
    assert out.returncode == 1 and "seeds must not be empty (from --set experiment.seeds=[])" in out.stderr
    assert not (tmp_path / "a").exists()
