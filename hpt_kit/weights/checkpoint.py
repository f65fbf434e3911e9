"""Checkpoints: ``model.safetensors`` + ``checkpoint.json`` (+ ``training_state.pt`` to resume).

A run directory keeps ``checkpoints/step_NNNNNNNN/`` folders and a ``latest`` symlink. Every folder is
written under a temporary name and renamed when complete, and ``latest`` is swapped atomically, so an
interrupted run never leaves a checkpoint that looks whole but is not.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.core.spec import EmbodimentData, spec_from_dict
from hpt_kit.weights.locations import resolve_location
from hpt_kit.weights.tensors import CheckpointError, safe_torch_load

FORMAT = "hpt-kit-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
DESCRIPTION = "checkpoint.json"
TRAINING_STATE = "training_state.pt"
LATEST = "latest"
STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    description: dict[str, Any]

    @property
    def trunk_config(self) -> TrunkConfig:
        return TrunkConfig(**self.description["trunk"])

    @property
    def specs(self) -> dict[str, EmbodimentData]:
        return {n: spec_from_dict(e["spec"]) for n, e in self.description["embodiments"].items()}

    @property
    def stats(self) -> dict[str, dict]:
        return {n: e["stats"] for n, e in self.description["embodiments"].items()}

    @property
    def step(self) -> int:
        return int(self.description.get("step", 0))

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    def tensors(self) -> dict[str, torch.Tensor]:
        if not self.weights_path.is_file():
            raise CheckpointError(f"{self.path}: {WEIGHTS} is missing")
        return load_file(str(self.weights_path))


def read_checkpoint(folder: str | Path) -> Checkpoint:
    folder = Path(folder)
    desc_path = folder / DESCRIPTION
    if not desc_path.is_file():
        raise CheckpointError(f"{folder}: not a checkpoint ({DESCRIPTION} is missing)")
    try:
        desc = json.loads(desc_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{desc_path}: not valid JSON ({exc})") from None
    if desc.get("format") != FORMAT:
        raise CheckpointError(f"{desc_path}: 'format' is {desc.get('format')!r}, expected {FORMAT!r}")
    if desc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{desc_path}: format_version {desc.get('format_version')!r} is not supported")
    for key in ("trunk", "embodiments"):
        if key not in desc:
            raise CheckpointError(f"{desc_path}: key {key!r} is missing")
    ckpt = Checkpoint(folder.resolve(), desc)
    try:
        ckpt.trunk_config, ckpt.specs, ckpt.stats  # noqa: B018 - parse now, fail here with the file's name
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{desc_path}: malformed trunk or embodiment description ({exc!r})") from None
    return ckpt


def resolve_checkpoint(location: str | Path) -> Checkpoint:
    """A checkpoint folder, a run directory (its latest checkpoint) or ``hf://OWNER/REPO[@REV]``."""
    path = resolve_location(location, "checkpoint or run directory")
    if (path / DESCRIPTION).is_file():
        return read_checkpoint(path)
    latest = path / "checkpoints" / LATEST
    if latest.exists():
        return read_checkpoint(latest.resolve())
    raise CheckpointError(f"{path}: neither a checkpoint ({DESCRIPTION}) nor a run directory (checkpoints/{LATEST})")


def describe(
    model: Any,
    step: int,
    recipe: Mapping[str, Any] | None = None,
    datasets: Mapping[str, Mapping[str, Any]] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``checkpoint.json`` of ``model`` (an ``HPT``: its trunk config, specs and statistics)."""
    from hpt_kit.core.version import __version__

    stats = model.stats()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kit_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "step": step,
        "trunk": model.trunk_config.to_dict(),
        "embodiments": {
            name: {"spec": spec.to_dict(), "stats": stats[name], "dataset": dict((datasets or {}).get(name, {}))}
            for name, spec in model.specs.items()
        },
        "recipe": dict(recipe or {}),
        "metrics": dict(metrics or {}),
        **dict(extra or {}),
    }


def write_checkpoint_folder(
    folder: Path,
    model: torch.nn.Module,
    description: Mapping[str, Any],
    training_state: Mapping[str, Any] | None = None,
    tensors: Mapping[str, torch.Tensor] | None = None,
    extra_tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a complete checkpoint to ``folder`` atomically (temporary sibling, then rename).
    ``tensors``: the model's whole state when it is sharded (default: ``model.state_dict()``).
    ``extra_tensors``: more safetensors files by name (LoRA adapters), written in the same folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        source = model.state_dict() if tensors is None else tensors
        save_file({k: v.detach().cpu().contiguous() for k, v in source.items()}, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        for name, extra in (extra_tensors or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, str(tmp / name), metadata={"format": FORMAT})
        (tmp / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        if training_state is not None:
            torch.save(dict(training_state), tmp / TRAINING_STATE)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def save_run_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    description: Mapping[str, Any],
    training_state: Mapping[str, Any],
    keep: int = 3,
    tensors: Mapping[str, torch.Tensor] | None = None,
    extra_tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    ckpt_dir = Path(run_dir) / "checkpoints"
    folder = write_checkpoint_folder(ckpt_dir / f"step_{step:08d}", model, description, training_state, tensors, extra_tensors)
    link_tmp = ckpt_dir / f".{LATEST}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(folder.name, link_tmp)
    os.replace(link_tmp, ckpt_dir / LATEST)
    steps = sorted(p for p in ckpt_dir.iterdir() if STEP_DIR.match(p.name))
    for old in steps[:-keep] if keep > 0 else []:
        if old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    link = Path(run_dir) / "checkpoints" / LATEST
    return link.resolve() if link.exists() else None


def load_training_state(folder: Path) -> dict[str, Any]:
    path = Path(folder) / TRAINING_STATE
    if not path.is_file():
        raise CheckpointError(f"{folder}: {TRAINING_STATE} is missing; this checkpoint cannot resume a run")
    return safe_torch_load(path)
