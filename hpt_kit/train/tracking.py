"""Experiment trackers fed from the run's own records.

``metrics.jsonl`` stays the record of truth: every record :class:`~hpt_kit.train.record.RunRecord`
writes there is handed, as it is, to each tracker the recipe's ``[log]`` section turns on, so a
tracker shows exactly what the file holds and adds nothing of its own. Two trackers, both in the
extra ``hpt-kit[track]``: TensorBoard (``[log] tensorboard = true``, ``torch.utils.tensorboard``) and
Weights & Biases (``[log] wandb = "offline"`` or ``"online"``; ``wandb`` is imported only then).

Tags (both): ``train/loss``, ``train/loss/<embodiment>`` (the step's embodiment, or ``mixed``),
``train/lr``, ``train/samples_per_s``, ``train/grad_norm``, ``val/loss/<embodiment>``. TensorBoard
stores the recipe as hyperparameters (flattened to ``section.key``, ``datasets[i].key``) and as text;
W&B as the run's config (nested as in ``recipe.toml``, plus ``run_dir`` and, from the first record,
mode and parameter counts), with the recipe's ``run.name`` as the run's name.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from hpt_kit.core.recipe import Recipe, RecipeError, recipe_to_toml

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"  # W&B writes its run folders here (wandb.init's dir is the run directory)
WANDB_ID_FILE = f"{WANDB_DIR}/run-id"  # the W&B run id, so a resumed run continues it
START_KEYS = ("mode", "parameters", "trainable")  # of the start record, shown beside the recipe


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


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record's values under the trackers' tag names (empty for other records)."""
    out: dict[str, float] = {}
    if "loss" in record:
        out["train/loss"] = out[f"train/loss/{record['embodiment']}"] = record["loss"]
        out.update({f"train/{key}": record[key] for key in ("lr", "samples_per_s", "grad_norm") if key in record})
    out.update({f"val/loss/{name}": value for name, value in record.get("val_loss", {}).items()})
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
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def _start(self, record: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        params = flat_hparams(self.recipe.to_dict())
        params.update({k: record[k] for k in START_KEYS if k in record})
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


class WandbTracker:
    """The run's records as a Weights & Biases run written into ``<run>/wandb``. ``mode`` "offline"
    writes the run there only (``wandb sync <run>/wandb/offline-run-*`` uploads it later), "online"
    also streams it. The run id is kept in ``<run>/wandb/run-id``: a run resumed from step ``start``
    continues that W&B run (offline, a second run folder with the same id, which ``wandb sync``
    appends to the first; online, W&B's ``resume="allow"``). A fresh run (``start == 0``) starts a
    new W&B run."""

    def __init__(self, run_dir: Path, recipe: Recipe, start: int):
        mode = recipe.log.wandb
        try:
            import wandb
        except ImportError as exc:
            raise RecipeError(f"[log] wandb = {mode!r} needs wandb: pip install 'hpt-kit[track]' ({exc})") from None
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if start and id_file.is_file() else ""
        run_id = run_id or "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
        config = {**recipe.to_dict(), "run_dir": str(run_dir.resolve())}
        try:
            self.run = wandb.init(
                project=recipe.log.wandb_project, name=recipe.run.name, id=run_id, dir=str(run_dir), mode=mode,
                config=config, resume="allow" if mode == "online" else None,
            )
        except Exception as exc:  # noqa: BLE001 - W&B's own errors (no login, no network) in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RecipeError(f"[log] wandb = {mode!r}: W&B did not start ({first}); "
                              "run `wandb login`, or use wandb = \"offline\"") from None

    def log(self, record: Mapping[str, Any]) -> None:
        if record.get("event") == "start":
            self.run.config.update({k: record[k] for k in START_KEYS if k in record}, allow_val_change=True)
            return
        values = scalars(record)
        if values and record.get("step") is not None:
            self.run.log(values, step=record["step"])

    def close(self) -> None:
        self.run.finish()


def open_trackers(run_dir: Path, recipe: Recipe, start: int) -> list[Tracker]:
    """The trackers ``recipe.log`` asks for (rank 0 only; the caller decides)."""
    trackers: list[Tracker] = []
    if recipe.log.tensorboard:
        trackers.append(TensorBoardTracker(run_dir, recipe, start))
    if recipe.log.wandb:
        trackers.append(WandbTracker(run_dir, recipe, start))
    return trackers
