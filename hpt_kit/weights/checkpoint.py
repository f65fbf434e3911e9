"""Checkpoints: ``model.safetensors`` + ``checkpoint.json`` (+ ``training_state.pt`` to resume).

A run directory keeps ``checkpoints/step_NNNNNNNN/`` folders and a ``latest`` symlink. Every folder is
written under a temporary name and renamed when complete, and ``latest`` is swapped atomically, so an
interrupted run never leaves a checkpoint that looks whole but is not. Old folders are renamed away
before they are deleted, so an interrupted prune leaves no half folder under a step name either.

What a crash can still leave (a temporary folder, a folder being deleted, ``latest`` pointing at a
folder that is gone or damaged) is found by :func:`repair_run` when a run resumes: leftovers are
removed and ``latest`` is pointed at the newest complete checkpoint, each change reported. Every
other reader of a run (:func:`resolve_checkpoint`: info, eval, serve, export, push, report, a
transfer's trunk) refuses a damaged latest, naming the file and the reason, and takes an older
checkpoint only when it is chosen explicitly.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.core.spec import EmbodimentData, spec_from_dict
from hpt_kit.weights.locations import resolve_location
from hpt_kit.weights.tensors import CheckpointError, check_safetensors, read_safetensors, safe_torch_load

log = logging.getLogger(__name__)

FORMAT = "hpt-kit-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
DESCRIPTION = "checkpoint.json"
TRAINING_STATE = "training_state.pt"
LATEST = "latest"
STEP_DIR = re.compile(r"^step_(\d+)$")
LEFTOVER = re.compile(r"^\.(step_\d+|latest|best|best_step_\d+)\.(tmp|del)-[0-9a-f]+$")  # temporary or half-deleted
BEST_STEP_DIR = re.compile(r"^best_step_\d+$")  # weights/best.py: the folders ``best`` may point to


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
        return read_safetensors(self.weights_path)


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
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS} is missing")
    check_safetensors(weights)  # a truncated or zeroed file fails here, named, not deep in a load
    ckpt = Checkpoint(folder.resolve(), desc)
    try:
        ckpt.trunk_config, ckpt.specs, ckpt.stats  # noqa: B018 - parse now, fail here with the file's name
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{desc_path}: malformed trunk or embodiment description ({exc!r})") from None
    return ckpt


class DamagedCheckpointError(CheckpointError):
    """The checkpoint a run directory's ``latest`` names is missing or damaged. Commands that read a run
    refuse it rather than quietly using an older one; only ``--resume`` falls back (:func:`repair_run`)."""


class NoCheckpointError(CheckpointError):
    """A run directory that has not written a checkpoint yet."""


def resolve_checkpoint(location: str | Path, choice: str | None = None, option: str = "--checkpoint") -> Checkpoint:
    """A checkpoint folder, a run directory or ``hf://OWNER/REPO[@REV]``.

    Of a run directory: its latest checkpoint, which must be complete (a damaged one is a
    :class:`DamagedCheckpointError` naming the file and the reason, and how to choose another), or the
    one ``choice`` names (:func:`chosen_folder`). ``option`` is the command's name for the choice, for
    the messages."""
    path = resolve_location(location, "checkpoint or run directory")
    run = (path / "checkpoints").is_dir()
    if choice is not None:
        if not run:
            raise CheckpointError(f"{path}: {option} {choice} chooses among a run directory's checkpoints; this is not a run directory")
        return read_checkpoint(chosen_folder(path, choice, option))
    if (path / DESCRIPTION).is_file():
        return read_checkpoint(path)
    if run:
        return read_checkpoint(latest_of_run(path, option))
    raise CheckpointError(f"{path}: neither a checkpoint ({DESCRIPTION}) nor a run directory (checkpoints/{LATEST})")


def latest_of_run(run_dir: Path, option: str = "--checkpoint") -> Path:
    """The folder ``latest`` points to, refused unless complete: the one-line problem (file and
    reason), then the complete checkpoints one may choose instead."""
    link = Path(run_dir) / "checkpoints" / LATEST
    if not link.is_symlink() and not link.exists():
        if not step_folders(run_dir):
            raise NoCheckpointError(f"{run_dir}: a run directory without a checkpoint yet")
        problem = f"{link} is missing"
    elif not link.exists():
        problem = f"{link} points to {os.readlink(link)}, which is missing"
    else:
        folder = link.resolve()
        problem = checkpoint_problem(folder, resumable=False)
        if problem is None:
            return folder
        if not problem.startswith(str(folder)):
            problem = f"{folder}: {problem}"
    raise DamagedCheckpointError(f"{problem}; it is the latest checkpoint of {run_dir}, refused. {_alternatives(run_dir, option)}")


def _alternatives(run_dir: Path, option: str) -> str:
    """How to choose an older checkpoint explicitly, naming the complete ones."""
    complete = [f for f in reversed(step_folders(run_dir)) if checkpoint_problem(f, resumable=False) is None]
    best = Path(run_dir) / "checkpoints" / "best"
    choices = [f"{option} {int(f.name[5:])} ({f})" for f in complete[:1]]
    if len(complete) > 1:
        choices[0] += f" or another complete step ({', '.join(str(int(f.name[5:])) for f in complete[1:])})"
    if best.exists() and checkpoint_problem(best.resolve(), resumable=False) is None:
        choices.append(f"{option} best")
    if not choices:
        return "The run has no other complete checkpoint."
    return "To use an older one, choose it explicitly: " + ", or ".join(choices)


def chosen_folder(run_dir: Path, choice: str, option: str = "--checkpoint") -> Path:
    """The checkpoint folder of ``run_dir`` that ``choice`` names: a step number, ``best``, ``latest``,
    a folder name under ``checkpoints/`` or a path."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if choice == LATEST:
        return latest_of_run(run_dir, option)
    if choice == "best":
        link = ckpt_dir / "best"
        if not link.exists():
            raise CheckpointError(f"{run_dir}: no checkpoints/best (no validated checkpoint yet); {option} takes a step instead")
        return link.resolve()
    if choice.isdigit():
        folder = ckpt_dir / f"step_{int(choice):08d}"
        if not folder.is_dir():
            steps = ", ".join(str(int(f.name[5:])) for f in step_folders(run_dir)) or "none"
            raise CheckpointError(f"{run_dir}: no checkpoint at step {int(choice)} ({option}); its steps: {steps}")
        return folder
    for folder in (ckpt_dir / choice, Path(choice)):
        if folder.is_dir():
            return folder.resolve()
    raise CheckpointError(f"{run_dir}: {option} {choice!r} is neither a step number, best, latest nor a checkpoint folder")


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
            _delete(folder)
        os.replace(tmp, folder)
    except (OSError, RuntimeError, SafetensorError) as exc:  # a full disk, a lost mount: say where
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise CheckpointError(f"{folder}: cannot write the checkpoint ({reason}); earlier checkpoints are untouched") from None
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
    steps = step_folders(run_dir)
    for old in steps[:-keep] if keep > 0 else []:
        if old.name != folder.name:
            _delete(old)
    return folder


def _delete(folder: Path) -> None:
    """Rename, then delete: an interrupted deletion leaves a hidden leftover, never a half step folder."""
    doomed = folder.parent / f".{folder.name}.del-{uuid.uuid4().hex[:8]}"
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def step_folders(run_dir: Path) -> list[Path]:
    """The run's ``step_N`` folders, oldest first."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    return sorted((p for p in ckpt_dir.iterdir() if STEP_DIR.match(p.name) and p.is_dir()), key=lambda p: int(p.name[5:]))


def checkpoint_problem(folder: Path, resumable: bool = True) -> str | None:
    """Why ``folder`` is not a complete checkpoint (None when it is): a missing file, a description
    that does not parse, weights whose header is damaged or truncated."""
    needed = (DESCRIPTION, WEIGHTS, TRAINING_STATE) if resumable else (DESCRIPTION, WEIGHTS)
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    try:
        read_checkpoint(folder)
    except CheckpointError as exc:
        return str(exc)
    return None


def latest_checkpoint(run_dir: Path, resumable: bool = True) -> Path | None:
    """The checkpoint ``latest`` points to; when it dangles or is damaged, the newest complete one
    (with a warning). None when the run has no complete checkpoint. For resuming and for a run's own
    loop: commands that read a run use :func:`resolve_checkpoint`, which refuses a damaged latest."""
    link = Path(run_dir) / "checkpoints" / LATEST
    if link.exists() and checkpoint_problem(link.resolve(), resumable) is None:
        return link.resolve()
    for folder in reversed(step_folders(run_dir)):
        if checkpoint_problem(folder, resumable) is None:
            target = os.readlink(link) if link.is_symlink() else None
            log.warning("%s: %s is not a complete checkpoint; using %s", run_dir, target or LATEST, folder.name)
            return folder.resolve()
    return None


def repair_run(run_dir: Path) -> list[str]:
    """Undo what an interrupted run can leave in ``run_dir``; returns one line per change.

    Removes temporary and half-deleted folders, removes step folders with files missing that are older
    than the newest complete checkpoint (an interrupted prune), and points ``latest`` at the newest
    complete checkpoint when it dangles or points at a damaged one. Damaged folders newer than that are
    kept (a later save of the same step replaces them). The caller holds the run's lock.
    """
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    changes: list[str] = []
    for p in sorted(ckpt_dir.iterdir()):
        if LEFTOVER.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            changes.append(f"removed {p.name} (left by an interrupted write or deletion)")
    best = ckpt_dir / "best"
    kept = best.resolve().name if best.is_symlink() and best.exists() else None
    for p in sorted(ckpt_dir.iterdir()):
        if BEST_STEP_DIR.match(p.name) and p.name != kept:
            shutil.rmtree(p, ignore_errors=True)
            changes.append(f"removed {p.name} (a best checkpoint replaced by a newer one)")
    if best.is_symlink() and not best.exists():
        best.unlink()
        changes.append("removed best (it pointed at nothing)")
    folders = step_folders(run_dir)
    problems = {f.name: checkpoint_problem(f) for f in folders}
    complete = [f for f in folders if problems[f.name] is None]
    newest = complete[-1] if complete else None
    for f in folders:
        if problems[f.name] is None:
            continue
        missing = not all((f / n).is_file() for n in (DESCRIPTION, WEIGHTS, TRAINING_STATE))
        if newest is not None and int(f.name[5:]) < int(newest.name[5:]) and missing:
            _delete(f)
            changes.append(f"removed {f.name} ({problems[f.name]}: an interrupted prune)")
        else:
            changes.append(f"skipped {f.name}: {problems[f.name]}")
    link = ckpt_dir / LATEST
    points = link.resolve() if link.is_symlink() or link.exists() else None
    if newest is not None and points != newest.resolve():  # dangling, damaged, or a swap cut short
        was = os.readlink(link) if link.is_symlink() else "nothing"
        link_tmp = ckpt_dir / f".{LATEST}.tmp-{uuid.uuid4().hex[:8]}"
        os.symlink(newest.name, link_tmp)
        os.replace(link_tmp, link)
        changes.append(f"latest pointed to {was}; now {newest.name}, the newest complete checkpoint")
    return changes


def load_training_state(folder: Path) -> dict[str, Any]:
    path = Path(folder) / TRAINING_STATE
    if not path.is_file():
        raise CheckpointError(f"{folder}: {TRAINING_STATE} is missing; this checkpoint cannot resume a run")
    return safe_torch_load(path)
