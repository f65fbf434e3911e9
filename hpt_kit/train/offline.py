"""Offline evaluation: how well a trained network predicts the actions of episodes it never trained on.

For an embodiment with no simulator behind it (an imported dataset) there is no success rate to
measure. Its run's held-out episodes (the same split training used: the recipe's seed, validation
fraction and episode limit) stand in: every step of them is one window, the network predicts the
action chunk, and the report is the error per action dimension in the robot's own units, plus the
validation loss training reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpt_kit.core.recipe import parse_recipe
from hpt_kit.data.sampler import make_samplers
from hpt_kit.data.store import Dataset
from hpt_kit.train.step import to_torch


def held_out(description: Mapping[str, Any], name: str, spec: Any, dataset: Path | None = None):
    """The validation sampler of ``name``'s run: its dataset (or ``dataset``), split as in training."""
    recipe = parse_recipe(dict(description.get("recipe", {})), "checkpoint recipe")
    entries = [d for d in recipe.datasets if d.embodiment == name]
    stored = description["embodiments"][name].get("dataset", {}).get("path")
    path = Path(dataset) if dataset is not None else Path(stored) if stored else None
    if path is None:
        raise ValueError(f"the checkpoint does not say which dataset {name!r} trained on; pass --data")
    ds = Dataset(path)
    _, val = make_samplers(
        ds,
        spec.observation_horizon,
        spec.action_horizon,
        [s.modality for s in spec.stems],
        recipe.train.val_fraction,
        recipe.run.seed,
        (entries[0].max_episodes or None) if entries else None,
    )
    if val is None:
        raise ValueError(f"{path}: the run held out no episodes (train.val_fraction = 0): nothing to evaluate on")
    return ds, val


@torch.no_grad()
def offline_metrics(model: torch.nn.Module, name: str, val: Any, batch_size: int = 256) -> dict[str, Any]:
    """Validation loss, and the mean absolute error of the predicted chunk (all its steps, and its
    first step alone: the one a robot executes first) per action dimension, in the robot's units."""
    model.eval()
    loss_sum, n = 0.0, 0
    abs_sum = first_sum = None
    for raw in val.batches(batch_size):
        batch = to_torch(raw, torch.device("cpu"))
        count = len(raw["action"])
        loss_sum += model.loss(name, batch).item() * count
        err = (model.predict(name, batch) - batch["action"]).abs()  # (B, K, A), robot units
        abs_sum = err.sum(dim=(0, 1)) if abs_sum is None else abs_sum + err.sum(dim=(0, 1))
        first_sum = err[:, 0].sum(dim=0) if first_sum is None else first_sum + err[:, 0].sum(dim=0)
        n += count
    chunk = val.action_horizon
    mae = (abs_sum / (n * chunk)).tolist()
    return {
        "windows": n,
        "val_loss": loss_sum / n,
        "action_mae": mae,
        "first_action_mae": (first_sum / n).tolist(),
        "mean_action_mae": float(np.mean(mae)),
    }
