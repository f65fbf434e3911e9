"""The step budget of a transfer run from its dataset's size, and the settings such a run gets."""

from __future__ import annotations

import numpy as np

from hpt_kit.data.convert import convert
from hpt_kit.data.sampler import split_episodes
from hpt_kit.data.store import Dataset
from hpt_kit.train.budget import MAX_STEPS, MIN_STEPS, step_budget, training_windows, transfer_train
from tests.conftest import make_toy


def test_the_budget_is_thirty_draws_of_every_window_within_bounds():
    assert step_budget(16 * 50, 64) == 375  # 20 demonstrations of 50 steps, 4 held out
    assert step_budget(160 * 150, 64) == 11_250
    assert step_budget(10, 64) == MIN_STEPS and step_budget(10**7, 64) == MAX_STEPS
    assert (step_budget(1000, 32), step_budget(1000, 64)) == (938, 469)  # rounded up


def test_training_windows_count_the_steps_of_the_episodes_the_run_trains_on(tmp_path):
    ds = Dataset(convert(make_toy(), tmp_path / "toy.zarr", episodes=10))
    lengths = np.diff(ds.episode_ends, prepend=0)
    train_eps, _ = split_episodes(6, 0.2, 3)
    assert training_windows(ds, 6, 0.2, 3) == lengths[train_eps].sum()
    assert training_windows(ds, 0, 0.0, 0) == ds.num_steps


def test_transfer_settings_scale_with_the_steps():
    t = transfer_train(400)
    assert (t.warmup_steps, t.val_every, t.checkpoint_every, t.log_every, t.val_fraction, t.lr) == (20, 40, 40, 20, 0.2, 1e-3)
    assert transfer_train(5).warmup_steps == 1
