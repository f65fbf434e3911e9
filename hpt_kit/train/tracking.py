"""Experiment trackers fed from the run's own records.

``metrics.jsonl`` stays the record of truth: every record :class:`~hpt_kit.train.record.RunRecord`
writes there is handed, as it is, to each tracker the recipe's ``[log]`` section turns on, so a
tracker shows exactly what the file holds and adds nothing of its own. One tracker so far:
TensorBoard (``[log] tensorboard = true``, ``torch.utils.tensorboard``; the extra ``hpt-kit[track]``).

Tags: ``train/loss``, ``train/loss/<embodiment>`` (the step's embodiment, or ``mixed``), ``train/lr``,
``train/samples_per_s``, ``train/grad_norm``, ``val/loss/<embodiment>``; the recipe is stored as
hyperparameters (flattened to ``section.key``, ``datasets[i].key``) and as text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from hpt_kit.core.recipe import Recipe, recipe_to_toml

TENSORBOARD_DIR = "tensorboard"


class Tracker(Protocol):
    def log(self, record: Mapping[str, Any]) -> None:
        """One record, as written to metrics.jsonl."""
        ...

    def close(self) -> None: ...


def flat_hparams(data: Any, prefix: str = "") -> dict[str, Any]:
    """A recipe's plain data as ``{"train.lr": 3e-4, "datasets[0].embodiment": "arm", ...}``:
    scalars kept, empty and nested values other than tables as JSON text."""
    out: dict[str, Any] = {}
    if isinstance(data, Mapping) and data:
        for key, value in data.items():
            out.update(flat_hparams(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list) and data and all(isinstance(v, Mapping) for v in data):
        for i, value in enumerate(data):
            out.update(flat_hparams(value, f"{prefix}[{i}]"))
    elif isinstance(data, bool | int | float | str):
        out[prefix] = data
    else:
        out[prefix] = json.dumps(data)
    return out


class TensorBoardTracker:
    """The run's records as TensorBoard scalars in ``<run>/tensorboard``. On resume from step
    ``start`` the writer purges what an interrupted run logged after that step, as metrics.jsonl does."""

    def __init__(self, run_dir: Path, recipe: Recipe, start: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError(f"[log] tensorboard = true needs tensorboard: pip install 'hpt-kit[track]' ({exc})") from None
        self.recipe = recipe
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start + 1 if start else None)

    def log(self, record: Mapping[str, Any]) -> None:
        if record.get("event") == "start":
            self._start(record)
            return
        step = record.get("step")
        if step is None:
            return
        if "loss" in record:
            self.writer.add_scalar("train/loss", record["loss"], step)
            self.writer.add_scalar(f"train/loss/{record['embodiment']}", record["loss"], step)
            for key in ("lr", "samples_per_s", "grad_norm"):
                if key in record:
                    self.writer.add_scalar(f"train/{key}", record[key], step)
        for name, value in record.get("val_loss", {}).items():
            self.writer.add_scalar(f"val/loss/{name}", value, step)
        self.writer.flush()

    def _start(self, record: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        params = flat_hparams(self.recipe.to_dict())
        params.update({k: record[k] for k in ("mode", "parameters", "trainable") if k in record})
        # The hyperparameters go into this run's own event file (SummaryWriter.add_hparams would
        # start a second run beside it); the metric tag links them to the validation curves.
        metrics = {f"val/loss/{d.embodiment}": 0.0 for d in self.recipe.datasets}
        for summary in hparams(params, metrics):
            self.writer.file_writer.add_summary(summary)
        toml = recipe_to_toml(self.recipe).replace("\n", "\n    ")
        self.writer.add_text("recipe", f"    {toml}", 0)  # indented: shown as code
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_trackers(run_dir: Path, recipe: Recipe, start: int) -> list[Tracker]:
    """The trackers ``recipe.log`` asks for (rank 0 only; the caller decides)."""
    trackers: list[Tracker] = []
    if recipe.log.tensorboard:
        trackers.append(TensorBoardTracker(run_dir, recipe, start))
    return trackers
