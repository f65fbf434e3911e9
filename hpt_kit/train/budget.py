"""The training settings of a transfer run that no recipe describes: ``hpt-kit transfer --embodiment
NAME`` and every run of ``hpt-kit experiment transfer`` share them, so that a baseline, a transfer
and an experiment warm up, validate and checkpoint alike.

Step budget (when neither ``--steps`` nor the recipe's ``[train] steps`` is given)::

    steps = ceil(PASSES * training windows / batch_size), clamped to [MIN_STEPS, MAX_STEPS]

A training window starts at every step of the training episodes (the first ``max_episodes``, less the
validation share, split as the run splits them), so every window is drawn about ``PASSES`` times:
20 demonstrations of 50 steps at batch 64 and a 0.2 validation share give 375 steps; 200 episodes of
150 steps give 11,250.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hpt_kit.core.recipe import TrainSection
from hpt_kit.data.sampler import split_episodes
from hpt_kit.data.store import Dataset

PASSES = 30  # average draws of each training window
MIN_STEPS = 200  # enough for the warm-up and a few validations on a handful of demonstrations
MAX_STEPS = 20_000  # beyond this, ask for it with --steps
VAL_FRACTION = 0.2  # a larger share than pre-training's 0.1: transfer datasets are small
# `hpt-kit transfer` without a recipe holds out at least this many episodes (while two thirds still
# train), so that offline evaluation can put an interval on its errors; experiments keep 1.
VAL_MIN_EPISODES = 3
LR = 1e-3


def training_windows(
    ds: Dataset, max_episodes: int, val_fraction: float, seed: int, min_val: int = 1, held_out: Sequence[int] = ()
) -> int:
    """Steps of the episodes a run trains on (its first ``max_episodes``, 0 = all, less validation)."""
    n = min(max_episodes, ds.num_episodes) if max_episodes else ds.num_episodes
    train_eps, _ = split_episodes(n, val_fraction, seed, min_val, held_out)
    lengths = np.diff(ds.episode_ends, prepend=0)
    return int(lengths[train_eps].sum())


def step_budget(windows: int, batch_size: int) -> int:
    """The module's rule: about ``PASSES`` draws of every training window, within the bounds."""
    return int(min(MAX_STEPS, max(MIN_STEPS, math.ceil(PASSES * windows / batch_size))))


def transfer_train(
    steps: int, batch_size: int = 64, lr: float = LR, device: str = "auto", val_fraction: float = VAL_FRACTION, val_min_episodes: int = 1
) -> TrainSection:
    """The ``[train]`` section of such a run: warm-up over the first 5% of the steps, validation and a
    checkpoint every 10% (so the ``best`` checkpoint can be any validated step), a log line every 5%."""
    return TrainSection(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=max(1, steps // 20),
        val_every=max(1, steps // 10),
        checkpoint_every=max(1, steps // 10),
        log_every=max(1, steps // 20),
        val_fraction=val_fraction,
        val_min_episodes=val_min_episodes,
        device=device,
    )
