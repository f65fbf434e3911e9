"""What a run writes besides its weights: ``recipe.toml``, ``metrics.jsonl`` and the description
each checkpoint carries. Only rank 0 writes; the other ranks' records are no-ops."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from hpt_kit.core.recipe import Recipe, recipe_to_toml
from hpt_kit.data.store import Dataset
from hpt_kit.models.hpt import HPT
from hpt_kit.models.lora import LORA_FILE, split_lora
from hpt_kit.train import distributed
from hpt_kit.train.state import RunState
from hpt_kit.train.tracking import Tracker, open_trackers
from hpt_kit.weights.checkpoint import describe, save_run_checkpoint
from hpt_kit.weights.tensors import CheckpointError

log = logging.getLogger(__name__)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` whole: a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write it ({exc.strerror or exc})") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``. A last line cut short (a crash or a full disk mid-write) is
    dropped with a warning; a damaged line before it is an error naming the file and the line."""
    lines = path.read_text(errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if all(not rest.strip() for rest in lines[number:]):
                log.warning("%s: dropped its last line, cut short by an interrupted write (%d characters)", path, len(line))
                continue
            raise CheckpointError(f"{path}: line {number} is not JSON ({exc.msg}); remove or repair that line") from None
    return records


def open_metrics(path: Path, start: int) -> TextIO:
    """``metrics.jsonl`` for appending from step ``start``: on resume, records an interrupted run
    logged after its last checkpoint are dropped, so no step appears twice, and a torn last line is
    repaired. A file with nothing to drop or repair (a finished run resumed) is left as it is."""
    if start == 0 or not path.exists():
        return open(path, "w" if start == 0 else "a")
    records = read_metrics(path)
    kept = [r for r in records if r.get("step", 0) <= start]
    text = path.read_text(errors="replace")
    lines = [line for line in text.split("\n") if line.strip()]
    if not (len(kept) == len(records) == len(lines) and text.endswith("\n")):  # something to drop or repair
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return open(path, "a")


@dataclass
class RunRecord:
    """The run directory's records. ``extra`` (mode, frozen trunk, world size, trunk source) and
    ``counts`` (parameters) go into every checkpoint's description and the first metrics line."""

    run_dir: Path
    recipe: Recipe
    world: distributed.World
    datasets: dict[str, dict[str, Any]]
    extra: dict[str, Any]
    counts: dict[str, int]
    on_log: Callable[[dict[str, Any]], None] | None = None
    _file: TextIO | None = None
    _window_start: float = field(default_factory=time.perf_counter)  # since the last logged step
    _window_samples: int = 0
    _trackers: list[Tracker] = field(default_factory=list)  # [log]: fed the same records as metrics.jsonl

    @classmethod
    def open(
        cls, run_dir: Path, recipe: Recipe, world: distributed.World, datasets: Mapping[str, Dataset],
        extra: dict[str, Any], counts: dict[str, int], start: int, on_log: Callable[[dict[str, Any]], None] | None,
    ) -> RunRecord:
        info = {
            n: {"path": str(ds.path), "num_episodes": ds.num_episodes, "num_steps": ds.num_steps, "notes": ds.notes}
            for n, ds in datasets.items()
        }
        record = cls(run_dir, recipe, world, info, extra, counts, on_log)
        if world.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(run_dir / "recipe.toml", recipe_to_toml(recipe))
            record._file = open_metrics(run_dir / "metrics.jsonl", start)
            record._trackers = open_trackers(run_dir, recipe, start)
        return record

    def emit(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:
            self._discard()  # the line left in the buffer must not fail again in cleanup, hiding this error
            raise CheckpointError(f"{self.run_dir / 'metrics.jsonl'}: cannot write it ({exc.strerror or exc})") from None
        for tracker in self._trackers:
            tracker.log(record)
        if self.on_log:
            self.on_log(record)

    def samples(self, count: int) -> None:
        """Count samples trained since the last logged step (for ``samples_per_s``)."""
        self._window_samples += count

    def train_step(self, step: int, drawn: Mapping[str, int], loss: torch.Tensor, lr: float, grad_norm: torch.Tensor | None) -> float:
        """Log a training step: the loss averaged over ranks, the learning rate, throughput since the
        last logged step and the gradient norm. Returns the loss."""
        value = distributed.mean(self.world, loss.detach()).item()
        now = time.perf_counter()
        mixed = self.recipe.train.mix == "batch" and len(self.recipe.datasets) > 1
        entry = {
            "step": step,
            "embodiment": "mixed" if mixed else next(iter(drawn)),
            **({"samples": dict(drawn)} if mixed else {}),
            "loss": value,
            "lr": lr,
            "samples_per_s": self._window_samples / max(now - self._window_start, 1e-9),
        }
        if grad_norm is not None:  # a DTensor when sharded
            entry["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        self.emit(entry)
        self._window_start, self._window_samples = now, 0
        return value

    def checkpoint(self, step: int, model: HPT, state: RunState, sharded: bool, val_loss: Mapping[str, float]) -> None:
        """Save the weights and training state at ``step`` (a collective: every rank calls it)."""
        tensors, training_state = state.gather(self.world, model, sharded)
        if training_state is not None:
            metrics = {"val_loss": dict(val_loss), **self.counts}
            desc = describe(model, step, self.recipe.to_dict(), self.datasets, metrics, self.extra)
            keep = self.recipe.train.keep_checkpoints
            extra = None
            if "lora" in self.extra:  # the trunk under its usual names, the adapters in a file of their own
                tensors, adapters = split_lora(tensors)
                extra = {LORA_FILE: adapters}
            save_run_checkpoint(self.run_dir, step, model, desc, training_state, keep=keep, tensors=tensors, extra_tensors=extra)
        distributed.barrier(self.world)

    def _discard(self) -> None:
        """Close ``metrics.jsonl`` after a failed write, dropping what its buffer still holds."""
        file, self._file = self._file, None
        try:
            file.close()  # flushes again, fails again; the descriptor is closed all the same
        except OSError:
            pass

    def close(self, *exc_info: object) -> None:
        """Close the records. As an exit callback (``ExitStack.push``) while an error stops the run, a
        failure here is logged and the error that stopped the run is the one reported."""
        closers = [(str(self.run_dir / "metrics.jsonl"), self._file.close)] if self._file is not None else []
        closers += [(f"{type(t).__name__} tracker", t.close) for t in self._trackers]
        self._file, self._trackers = None, []
        failures = []
        for what, closer in closers:
            try:
                closer()
            except OSError as exc:
                failures.append(f"{what}: cannot close it ({exc.strerror or exc})")
        if failures and exc_info and exc_info[0] is not None:
            log.warning("; ".join(failures))
        elif failures:
            raise CheckpointError("; ".join(failures))
