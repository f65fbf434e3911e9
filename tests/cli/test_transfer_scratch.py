"""`hpt-kit transfer --from-scratch` (the baseline, recorded as such), the step budget a transfer
gets from its data when no --steps is given, and the `best` checkpoint `eval --best` reads."""

from __future__ import annotations

import json
import math
import re

import pytest

from hpt_kit.train.budget import step_budget
from tests.cli.conftest import RECIPE, hpt

pytestmark = pytest.mark.slow


def test_scratch_baseline_with_the_step_budget_and_the_best_checkpoint(tmp_path, plugin_env):
    refused = hpt(plugin_env, "transfer", "--embodiment", "drift-arm", "--from-scratch", "--freeze-trunk")
    assert refused.returncode == 1 and "drop --freeze-trunk" in refused.stderr
    refused = hpt(plugin_env, "transfer", "--embodiment", "drift-arm", "--trunk-preset", "tiny", "--trunk", tmp_path)
    assert refused.returncode == 1 and "--trunk-preset goes with --from-scratch" in refused.stderr
    refused = hpt(plugin_env, "transfer", "--embodiment", "drift-arm", "--from-scratch", "--trunk-lr-scale", 0)
    assert refused.returncode == 1 and "trunk_lr_scale must be a finite number > 0" in refused.stderr
    refused = hpt(plugin_env, "transfer", "--embodiment", "drift-arm", "--trunk", tmp_path, "--trunk-lr-scale", 0.1, "--steps", 2,
                  "--out", tmp_path / "refused")
    assert refused.returncode != 0 and "trunk_lr_scale = 0.1 scales the trunk's learning rate, but the trunk is frozen" in refused.stderr

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    assert hpt(plugin_env, "convert", "drift-arm", "--episodes", 6).returncode == 0
    run = tmp_path / "scratch"
    out = hpt(plugin_env, "transfer", "--embodiment", "drift-arm", "--from-scratch", "--trunk-preset", "tiny", "--trunk-lr-scale", 0.5,
              "--out", run)
    assert out.returncode == 0, out.stderr
    # No --steps: the budget from the data. 6 episodes of 8 steps, 2 held out (a transfer without a
    # recipe holds out at least 3 episodes while two thirds still train): 32 windows at batch 64.
    budget = step_budget(32, 64)
    assert budget == 200  # the floor: 30 draws of 32 windows is 15 batches
    said = re.search(r"steps: (\d+) \(no --steps: about 30 draws of each of 32 training windows at batch 64", out.stdout + out.stderr)
    assert said and int(said.group(1)) == budget, out.stdout + out.stderr

    latest = json.loads((run / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert latest["step"] == budget and latest["mode"] == "transfer"
    assert latest["from_scratch"] is True and latest["frozen_trunk"] is False
    assert latest["trunk"]["preset"] == "tiny" and not any(k.startswith("trunk_source") for k in latest)
    assert latest["recipe"]["transfer"]["trunk_lr_scale"] == 0.5
    assert latest["recipe"]["train"]["warmup_steps"] == budget // 20 and latest["recipe"]["train"]["val_fraction"] == 0.2

    # checkpoints/best: the validated checkpoint with the lowest validation loss.
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validated = {m["step"]: m["val_loss"]["drift-arm"] for m in metrics if "val_loss" in m}
    assert sorted(validated) == list(range(20, budget + 1, 20))
    best = json.loads((run / "checkpoints" / "best" / "checkpoint.json").read_text())
    assert math.isclose(best["metrics"]["val_loss"]["drift-arm"], min(validated.values()))
    assert validated[best["step"]] == min(validated.values())
    evaluated = hpt(plugin_env, "eval", run, "--best", "--episodes", 1, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["step"] == best["step"]
