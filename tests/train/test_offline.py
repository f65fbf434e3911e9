"""Offline evaluation on a real store and a real (untrained) network: the held-out split a run chose,
the two baselines scored on the same windows as the policy against values worked out by hand, the
rule that decides whether holding position applies, the intervals over episodes, and the replay plot."""

import dataclasses

import numpy as np
import pytest
import torch

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import ActionSpec, EmbodimentData, HeadSpec, ObservationSpec, StemSpec
from hpt_kit.core.stats import mean_interval, t975
from hpt_kit.data.sampler import make_samplers, split_episodes
from hpt_kit.data.store import Dataset, write_dataset
from hpt_kit.models.hpt import HPT
from hpt_kit.train.offline import (
    HOLD,
    REPEAT,
    held_out_episodes,
    hold_position_applies,
    offline_metrics,
    replay,
)

NAMES = ("shoulder.pos", "gripper.pos")


def _spec(**changes) -> EmbodimentData:
    spec = EmbodimentData(
        name="arm",
        observation=ObservationSpec(2, state_names=NAMES),
        action=ActionSpec(2, (-50.0, -50.0), (50.0, 50.0), 10.0, names=NAMES),
        stems=(StemSpec("state", hidden=(16,), num_tokens=2, num_heads=2),),
        head=HeadSpec(hidden=(16,), action_horizon=3),
    )
    return dataclasses.replace(spec, **changes)


def _episodes(count: int, steps: int):
    """Episode e: the state moves by (e + 1) per step in the first joint and stays in the second; the
    action is the next state (the last step's its own)."""
    for e in range(count):
        t = np.arange(steps, dtype=np.float32)
        state = np.stack([(e + 1) * t, np.full(steps, 3.0 + e, np.float32)], axis=1)
        action = np.concatenate([state[1:], state[-1:]])
        yield {"state": state, "action": action}


@pytest.fixture
def dataset(tmp_path) -> Dataset:
    return Dataset(write_dataset(tmp_path / "arm.zarr", _spec(), _episodes(6, 5)))


def test_both_baselines_and_the_policy_are_scored_on_the_same_windows(dataset):
    spec = _spec()
    torch.manual_seed(0)
    model = HPT(TrunkConfig(16, 1, 2), {"arm": spec}, {"arm": dataset.stats}, load_registry(load_entrypoints=False))
    _, val = make_samplers(dataset, 1, 3, ["state"], 0.2, 0, held_out=(1, 4))
    assert held_out_episodes(dataset, val) == [1, 4]
    out = offline_metrics(model, "arm", val, batch_size=3)  # batches that split episodes
    assert out["windows"] == 2 * 4 and out["episodes_scored"] == [1, 4] and out["dimensions"] == list(NAMES)
    # Holding position misses the first joint by e + 1 at 3 of the 4 windows (t = 1..4), by 0 at the last.
    hold = out["baselines"][HOLD]
    assert hold["applicable"] and hold["first_action_mae"] == pytest.approx([(2 + 5) * 3 / 8, 0.0])
    assert hold["per_episode_first_action_mae"] == pytest.approx([2 * 3 / 4 / 2, 5 * 3 / 4 / 2])
    # The chunk: steps t..t+2, clamped at the episode's end, where the hold error grows with the distance.
    err = [(e + 1) * min(k + 1 + t, 4) - (e + 1) * t for e in (1, 4) for t in range(1, 5) for k in range(3)]
    assert hold["action_mae"] == pytest.approx([np.mean(err), 0.0])
    # Repeating the previous action (the current state, here) misses by as much at the first step.
    repeat = out["baselines"][REPEAT]
    assert repeat["first_action_mae"] == pytest.approx(hold["first_action_mae"])
    # The policy on the very same windows, worked out from the network's own predictions.
    windows = val.batch(np.flatnonzero(val.index > val.start))
    with torch.no_grad():
        pred = model.predict("arm", {k: torch.as_tensor(v) for k, v in windows.items()}).numpy()
    mine = np.abs(pred - windows["action"])
    np.testing.assert_allclose(out["first_action_mae"], mine[:, 0].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(out["action_mae"], mine.mean(axis=(0, 1)), rtol=1e-5)
    low, high = out["ci95"]
    mean, *_ = mean_interval(out["per_episode_first_action_mae"])
    assert low < mean < high and hold["policy_minus_baseline"][0] == pytest.approx(mean - np.mean(hold["per_episode_first_action_mae"]))


def test_holding_position_applies_only_to_the_same_quantities():
    assert hold_position_applies(_spec())[0]
    other = _spec(action=ActionSpec(2, (-1.0, -1.0), (1.0, 1.0), 10.0, names=("shoulder.vel", "gripper.pos")))
    applies, why = hold_position_applies(other)
    assert not applies and "'shoulder.pos' and 'shoulder.vel' at 0" in why
    wider = _spec(action=ActionSpec(3, (-1.0,) * 3, (1.0,) * 3, 10.0))
    assert not hold_position_applies(wider)[0]
    unnamed = _spec(observation=ObservationSpec(2), action=ActionSpec(2, (-1.0, -1.0), (1.0, 1.0), 10.0))
    applies, why = hold_position_applies(unnamed)
    assert applies and "assumed" in why
    keyed = _spec(observation=ObservationSpec(2, state_names=("state[0]", "state[1]")))  # names the kit made from keys
    assert hold_position_applies(keyed)[0]


def test_the_split_names_its_episodes_or_holds_out_enough_for_an_interval():
    train, val = split_episodes(10, 0.2, 0, chosen=(7, 2))
    assert val.tolist() == [2, 7] and sorted([*train, *val]) == list(range(10))
    assert len(split_episodes(6, 0.2, 0)[1]) == 1  # the old rule: round(0.2 * 6)
    assert len(split_episodes(6, 0.2, 0, min_val=3)[1]) == 2  # at least 3 only while two thirds still train
    assert len(split_episodes(12, 0.2, 0, min_val=3)[1]) == 3
    assert len(split_episodes(2, 0.2, 0, min_val=3)[1]) == 1
    with pytest.raises(ValueError, match="episode 10 is not among the 10 episodes"):
        split_episodes(10, 0.2, 0, chosen=(10,))
    with pytest.raises(ValueError, match="holds out all 2 episodes"):
        split_episodes(2, 0.2, 0, chosen=(0, 1))


def test_intervals_over_episodes_use_student_t():
    assert t975(4) == 2.776 and abs(t975(40) - 2.0211) < 2e-4 and abs(t975(1000) - 1.9623) < 2e-4
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 * 1.0 / np.sqrt(3))
    assert mean_interval([5.0]) is None


def test_replay_draws_an_episode_and_says_whether_it_was_held_out(dataset, tmp_path):
    model = HPT(TrunkConfig(16, 1, 2), {"arm": _spec()}, {"arm": dataset.stats}, load_registry(load_entrypoints=False))
    out = replay(model, "arm", dataset, 3, tmp_path / "replay.png", held=[3])
    assert out["held_out"] and out["steps"] == 5 and (tmp_path / "replay.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="no episode 6; it has episodes 0 to 5"):
        replay(model, "arm", dataset, 6, tmp_path / "x.png")
