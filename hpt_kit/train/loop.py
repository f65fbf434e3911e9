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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hpt_kit.core.recipe import Recipe, RecipeError
from hpt_kit.core.registry import Registry
from hpt_kit.train import distributed
from hpt_kit.train.record import RunRecord
from hpt_kit.train.setup import (
    OnConvert,
    build_model,
    build_samplers,
    checkpoint_to_resume,
    mixture_weights,
    open_datasets_on_ranks,
    parallelize,
    run_mode,
    run_specs,
)
from hpt_kit.train.state import RunState
from hpt_kit.train.step import draw, lr_at, make_optimizer, optimizer_step, pick_device, sample, validate
from hpt_kit.weights.best import update_best
from hpt_kit.weights.checkpoint import latest_checkpoint, load_training_state

__all__ = ["TrainResult", "lr_at", "train"]


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
    rank 0 alone converts datasets and writes metrics and checkpoints.
    """
    world, device = distributed.setup(pick_device(recipe.train.device))
    try:
        with contextlib.ExitStack() as cleanup:  # streaming samplers' reading processes, however the run ends
            return _train(recipe, Path(run_dir), registry, resume, on_log, on_convert, world, device, cleanup)
    finally:
        distributed.teardown(world)


def _train(recipe, run_dir, registry, resume, on_log, on_convert, world, device, cleanup) -> TrainResult:
    cfg, seed = recipe.train, recipe.run.seed
    torch.manual_seed(seed)
    if cfg.batch_size % world.size:
        raise RecipeError(f"{recipe.source}: train.batch_size {cfg.batch_size} is not divisible by {world.size} processes")
    local_batch = cfg.batch_size // world.size
    run = run_mode(recipe)  # pretrain, transfer or its scratch baseline; a contradiction fails here
    resumed = checkpoint_to_resume(run_dir, resume, cfg.steps)

    # Data: rank 0 converts missing datasets; every rank opens them and takes its shard of episodes.
    datasets = open_datasets_on_ranks(recipe, registry, world, on_convert)
    specs = run_specs(recipe, datasets)
    train_s, val_s = build_samplers(recipe, datasets, specs, world, cleanup)
    names, weights = mixture_weights(recipe)

    # Model (normalised by the training episodes' statistics), placement and optimiser.
    model, source = build_model(recipe, specs, {n: s.stats for n, s in train_s.items()}, registry, resumed)
    frozen = run["frozen_trunk"]
    par = parallelize(model, recipe, world, device, frozen)
    state = RunState.fresh(seed, world, make_optimizer(par.trainable, cfg.lr, cfg.weight_decay, device), train_s)
    if resumed is not None:
        state.restore(load_training_state(resumed.path), world, model, par.sharded, seed, str(resumed.path))

    mode = {**run, "world_size": world.size}
    counts = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in par.trainable),
        "trunk": sum(p.numel() for p in model.trunk.parameters()),
    }
    record = RunRecord.open(run_dir, recipe, world, datasets, {**mode, **source}, counts, state.step, on_log)
    cleanup.callback(record.close)
    if state.step == 0:
        record.emit({"event": "start", **mode, **source, **counts, "embodiments": names, "device": str(device)})
    model.train()
    if frozen:
        model.trunk.eval()
    mixed = cfg.mix == "batch" and len(names) > 1
    val_loss: dict[str, float] = {}
    last_loss = float("nan")
    for step in range(state.step, cfg.steps):
        # Sample by mixture weight, then one AdamW step on the scheduled learning rate.
        drawn = draw(names, weights, local_batch, mixed, state.mix_rng)
        batches = sample(drawn, train_s, cfg.history_mask, state.data_rng, device)
        lr = lr_at(step, cfg)
        loss, grad_norm = optimizer_step(par.net, batches, state.optimizer, par.trainable, lr, cfg.grad_clip, device, cfg.compile)
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
