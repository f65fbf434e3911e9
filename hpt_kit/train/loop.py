"""One training loop for pre-training and transfer.

Pre-training builds a fresh trunk with a stem and head per dataset; transfer loads a trunk from a
checkpoint, attaches stems and heads for the recipe's datasets and optionally freezes the trunk. Both
then run the same loop: pick an embodiment by mixture weight (or, with ``mix = "batch"``, one per
sample), sample a batch, one AdamW step with warm-up + cosine learning rate and gradient clipping;
validate, log and checkpoint on schedule. The set-up steps are in ``setup.py``, the step in
``step.py``, the resumable state in ``state.py`` and the run's files in ``record.py``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hpt_kit.core.lock import run_lock
from hpt_kit.core.recipe import DatasetEntry, Recipe, RecipeError
from hpt_kit.core.registry import Registry
from hpt_kit.train import distributed
from hpt_kit.train.augment import build_augment
from hpt_kit.train.record import RunRecord
from hpt_kit.train.setup import (
    OnConvert,
    attach_lora,
    build_model,
    build_samplers,
    check_same_data,
    checkpoint_to_resume,
    mixture_weights,
    open_datasets_on_ranks,
    parallelize,
    run_mode,
    run_specs,
)
from hpt_kit.train.state import RunState
from hpt_kit.train.step import (
    draw,
    lr_at,
    make_optimizer,
    optimizer_step,
    pick_device,
    reuse_freed_memory,
    sample,
    validate,
)
from hpt_kit.train.threads import Threads, recorded_threads
from hpt_kit.weights.best import update_best
from hpt_kit.weights.checkpoint import latest_checkpoint, load_training_state

__all__ = ["TrainResult", "TrainingError", "lr_at", "train"]

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss or gradient); the message names the step and the
    embodiment, and the run directory keeps its last good checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path
    val_loss: dict[str, float]
    train_loss: float


def train(
    recipe: Recipe,
    run_dir: Path,
    registry: Registry,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_convert: OnConvert | None = None,
) -> TrainResult:
    """Run (or resume) the recipe into ``run_dir``. ``recipe.transfer.trunk`` set means transfer.

    Under ``torchrun`` every rank runs this: episodes are sharded by rank, each rank draws
    ``batch_size / world`` samples per step, gradients are averaged by DistributedDataParallel, and
    rank 0 alone converts datasets and writes metrics and checkpoints. Rank 0 holds the run
    directory's lock for the whole run: a second run on the same directory is refused, naming the
    holder.
    """
    world, device = distributed.setup(pick_device(recipe.train.device))
    created = _missing_folders(Path(run_dir)) if world.is_main else []
    try:
        with contextlib.ExitStack() as cleanup:  # streaming samplers' reading processes, however the run ends
            return _train(recipe, Path(run_dir), registry, resume, on_log, on_convert, world, device, cleanup)
    except BaseException:
        _remove_if_empty(created)  # a run refused or stopped before it wrote anything leaves no folder behind
        raise
    finally:
        distributed.teardown(world)


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()  # only ever an empty one
        except OSError:
            return


def _train(recipe, run_dir, registry, resume, on_log, on_convert, world, device, cleanup) -> TrainResult:
    cfg, seed = recipe.train, recipe.run.seed
    torch.manual_seed(seed)
    if cfg.batch_size % world.size:
        raise RecipeError(f"{recipe.source}: train.batch_size {cfg.batch_size} is not divisible by {world.size} processes")
    local_batch = cfg.batch_size // world.size
    # torch's compute threads: as set, else as the resumed run started, else the cores shared among kit runs
    threads = Threads(cfg.threads, recorded_threads(run_dir) if resume else None)
    run = run_mode(recipe)  # pretrain, transfer or its scratch baseline; a contradiction fails here
    # The run directory: locked, repaired after a crash and checked against the recipe by rank 0 first.
    if world.is_main:
        cleanup.enter_context(run_lock(run_dir))
        resumed = checkpoint_to_resume(run_dir, resume, recipe, repair=True)
    distributed.barrier(world)
    if not world.is_main:
        resumed = checkpoint_to_resume(run_dir, resume, recipe, repair=False)

    # Data: rank 0 converts missing datasets; every rank opens them and takes its shard of episodes.
    datasets = open_datasets_on_ranks(recipe, registry, world, on_convert)
    check_same_data(resumed, datasets)
    if world.is_main:
        for text in plan_warnings(recipe, datasets):
            log.warning("%s", text)
    specs = run_specs(recipe, datasets)
    train_s, val_s = build_samplers(recipe, datasets, specs, world, cleanup)
    names, weights = mixture_weights(recipe)

    # Model (normalised by the training episodes' statistics), placement and optimiser.
    model, source = build_model(recipe, specs, {n: s.stats for n, s in train_s.items()}, registry, resumed)
    source |= attach_lora(model, recipe, resumed)
    frozen = run["frozen_trunk"]
    par = parallelize(model, recipe, world, device, frozen)
    optimizer = make_optimizer(par.trainable, cfg.lr, cfg.weight_decay, device, par.trunk, recipe.transfer.trunk_lr_scale)
    if device.type == "cpu":
        reuse_freed_memory()  # large activations are reused, not faulted in again every step
    state = RunState.fresh(seed, world, optimizer, train_s)
    if resumed is not None:
        state.restore(load_training_state(resumed.path), world, model, par.sharded, seed, str(resumed.path))

    mode = {**run, "world_size": world.size}
    counts = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in par.trainable),
        "trunk": sum(p.numel() for p in model.trunk.parameters()),
    }
    record = RunRecord.open(run_dir, recipe, world, datasets, {**mode, **source}, counts, state.step, on_log)
    cleanup.push(record.close)  # as an exit callback: it knows whether an error is stopping the run
    if state.step == 0:
        record.emit({"event": "start", **mode, **source, **counts, "embodiments": names, "device": str(device), "threads": threads.current()})
    model.train()
    if frozen:
        model.trunk.eval()
    mixed = cfg.mix == "batch" and len(names) > 1
    augment = build_augment(cfg.augment)  # None unless [train.augment] asks for some
    val_loss: dict[str, float] = {}
    last_loss = float("nan")
    for step in range(state.step, cfg.steps):
        # Sample by mixture weight, then one AdamW step on the scheduled learning rate.
        drawn = draw(names, weights, local_batch, mixed, state.mix_rng)
        batches = sample(drawn, train_s, cfg.history_mask, state.data_rng, device, augment)
        lr = lr_at(step, cfg)
        loss, grad_norm, applied = optimizer_step(
            par.net, batches, state.optimizer, par.trainable, lr, cfg.grad_clip, device, cfg.compile, cfg.precision
        )
        if not applied:  # a non-finite loss or gradient: skipped, or the run stops at its last checkpoint
            state.skipped += 1
            _nonfinite(step + 1, drawn, loss, grad_norm, state.skipped, cfg.skip_nonfinite, record, run_dir)
        state.step = done = step + 1
        record.samples(cfg.batch_size)
        # Log, validate, checkpoint on schedule (and always at the end).
        if done % cfg.log_every == 0 or done == cfg.steps:
            last_loss = record.train_step(done, drawn, loss, lr, grad_norm)
        validated = done % cfg.val_every == 0 or done == cfg.steps
        if validated:
            val_loss = validate(model, val_s, cfg, device)
            record.emit({"step": done, "val_loss": val_loss})
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            record.checkpoint(done, model, state, par.sharded, val_loss)
            if validated and world.is_main:  # checkpoints/best: the lowest validation loss on its own weights
                update_best(run_dir, latest_checkpoint(run_dir), val_loss)
    final = latest_checkpoint(run_dir)
    assert final is not None  # the last step always checkpoints; a finished run resumes at it
    return TrainResult(run_dir, cfg.steps, final, val_loss, last_loss)


def plan_warnings(recipe: Recipe, datasets) -> list[str]:
    """What in the plan will not happen as written, though the run can go on: a warm-up as long as the
    run (the learning rate never reaches ``train.lr``), a dataset holding fewer episodes than the
    recipe asks of it."""
    cfg, out = recipe.train, []
    if cfg.warmup_steps >= cfg.steps:
        peak = cfg.lr * cfg.steps / max(cfg.warmup_steps, 1)
        out.append(
            f"{recipe.source}: train.warmup_steps {cfg.warmup_steps} >= train.steps {cfg.steps}: the learning rate "
            f"never reaches train.lr {cfg.lr:g} (at most {peak:.3g}); lower warmup_steps or train longer"
        )
    default = DatasetEntry.__dataclass_fields__["episodes"].default  # not written in the recipe: asks nothing
    for i, entry in enumerate(recipe.datasets):
        held = datasets[entry.embodiment].num_episodes
        asked = max(entry.max_episodes, entry.episodes if entry.episodes != default else 0)
        if held < asked:
            key = "max_episodes" if asked == entry.max_episodes else "episodes"
            out.append(
                f"{recipe.source}: datasets[{i}].{key} = {asked} but {datasets[entry.embodiment].path} holds {held} "
                f"episodes of {entry.embodiment}; training on those {held}"
                + ("" if "import" in datasets[entry.embodiment].notes else f" (hpt-kit convert {entry.embodiment} --episodes {asked} --overwrite for more)")
            )
    return out


def _nonfinite(step: int, drawn, loss: torch.Tensor, grad_norm: torch.Tensor, skipped: int, allowed: int, record: RunRecord, run_dir: Path) -> None:
    """Log a step that was not applied; past ``train.skip_nonfinite`` such steps, stop the run."""
    which = ", ".join(drawn)
    norm = float(getattr(grad_norm, "full_tensor", lambda: grad_norm)())
    values = f"gradient norm {norm:.4g} (loss {float(loss.detach()):.4g})"
    record.emit({"step": step, "event": "skipped", "reason": "non-finite", "embodiment": which, "skipped": skipped})
    if skipped > allowed:
        last = latest_checkpoint(run_dir)
        keep = f"; the last good checkpoint is {last}" if last is not None else "; no checkpoint was written"
        hint = f" (after {allowed} skipped; train.skip_nonfinite = {allowed})" if allowed else " (train.skip_nonfinite = 0)"
        raise TrainingError(
            f"step {step}: non-finite {values} on embodiment {which}{hint}{keep}; "
            "check that dataset for NaN/Inf or lower train.lr"
        )
