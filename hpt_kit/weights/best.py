"""The run's best checkpoint: ``checkpoints/best``, the validated checkpoint with the lowest
validation loss so far (the mean over the run's embodiments).

``best`` is a symlink, swapped atomically like ``latest``, to a folder ``best_step_NNNNNNNN`` that
holds hard links to that step's ``model.safetensors`` and ``checkpoint.json``: it survives the
pruning of old step folders (``keep_checkpoints``) without copying the weights. It has no training
state: it is for ``eval``, ``serve``, ``export`` and ``transfer --trunk``, not for ``--resume``.
A checkpoint is a candidate only when the validation loss it records was measured at its own step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from hpt_kit.weights.checkpoint import DESCRIPTION, WEIGHTS

BEST = "best"
BEST_DIR = "best_step_{step:08d}"


def score(val_loss: Mapping[str, float]) -> float:
    """What ``best`` minimises: the mean validation loss over embodiments (NaN when there is none)."""
    values = [float(v) for v in val_loss.values()]
    return sum(values) / len(values) if values else math.nan


def best_checkpoint(run_dir: str | Path) -> Path | None:
    link = Path(run_dir) / "checkpoints" / BEST
    return link.resolve() if link.exists() else None


def best_score(run_dir: str | Path) -> float:
    """The score of the current ``best`` (infinity when there is none yet)."""
    folder = best_checkpoint(run_dir)
    if folder is None:
        return math.inf
    recorded = json.loads((folder / DESCRIPTION).read_text()).get("metrics", {}).get("val_loss", {})
    value = score(recorded)
    return math.inf if math.isnan(value) else value


def update_best(run_dir: str | Path, step_folder: str | Path, val_loss: Mapping[str, float]) -> bool:
    """Point ``best`` at ``step_folder`` (a checkpoint of the run, whose metrics hold ``val_loss``)
    if its score beats the current best's. Returns whether it did."""
    value = score(val_loss)
    if math.isnan(value) or value >= best_score(run_dir):
        return False
    step_folder = Path(step_folder)
    ckpt_dir = Path(run_dir) / "checkpoints"
    step = int(json.loads((step_folder / DESCRIPTION).read_text())["step"])
    old = best_checkpoint(run_dir)
    target = ckpt_dir / BEST_DIR.format(step=step)
    tmp = ckpt_dir / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name in (WEIGHTS, DESCRIPTION):
            os.link(step_folder / name, tmp / name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    link_tmp = ckpt_dir / f".{BEST}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(target.name, link_tmp)
    os.replace(link_tmp, ckpt_dir / BEST)
    if old is not None and old != target.resolve():
        shutil.rmtree(old, ignore_errors=True)
    return True
