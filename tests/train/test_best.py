"""`checkpoints/best` follows the lowest validation loss, measured on the checkpoint's own weights,
and outlives the pruning of old step folders."""

from __future__ import annotations

import dataclasses
import json

from hpt_kit.core.registry import load_registry
from hpt_kit.train.loop import train
from hpt_kit.weights.best import best_checkpoint, update_best
from hpt_kit.weights.checkpoint import latest_checkpoint, read_checkpoint
from tests.train.test_loop import ToyPlugin, _recipe


def test_best_stays_on_the_lowest_validation_loss_after_its_step_folder_is_pruned(tmp_path, monkeypatch):
    registry = load_registry(load_entrypoints=False, extra_plugins=[("toys", ToyPlugin)])
    run = tmp_path / "run"
    recipe = _recipe(steps=20, keep_checkpoints=1)
    train(recipe, run, registry)
    first = read_checkpoint(best_checkpoint(run))
    assert first.step == 20 and (run / "checkpoints" / "best_step_00000020").is_dir()
    # Resumed for longer (a change a resume accepts) with a schedule that wrecks the network from
    # step 20 on (a resume refuses a changed train.lr, so the schedule itself is replaced here):
    # every later validation is worse.
    from hpt_kit.train import loop

    monkeypatch.setattr(loop, "lr_at", lambda step, cfg: 2.0)
    longer = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=60))
    train(longer, run, registry, resume=True)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = {m["step"]: m["val_loss"]["toy"] for m in metrics if "val_loss" in m}
    assert losses[40] > losses[20] and losses[60] > losses[20], losses
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "best_step_00000020", "latest", "step_00000060"]
    best = read_checkpoint(best_checkpoint(run))
    assert best.step == 20 and best.description["metrics"]["val_loss"] == {"toy": losses[20]}
    assert best.tensors().keys() == read_checkpoint(latest_checkpoint(run)).tensors().keys()
    # A worse candidate never replaces it.
    assert update_best(run, latest_checkpoint(run), {"toy": losses[60]}) is False
    # Commands that read the latest by default (eval, serve) say the best one is better, and how to use it.
    from hpt_kit.cli.choose import better_best
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    warning = better_best(resolve_checkpoint(run))
    assert warning is not None and "step 60 (latest)" in warning and "worse than step 20's" in warning and "--best" in warning
    assert better_best(resolve_checkpoint(run, "best")) is None
