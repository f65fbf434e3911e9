"""Parallel evaluation (worker processes, one simulator each, one batched policy) plays the same
episodes as serial evaluation: bit for bit with one network call per chunk, to float rounding batched."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from hpt_kit.core.recipe import parse_recipe
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import RolloutRequest
from hpt_kit.episode_workers import WorkerError, run_in_workers
from hpt_kit.policy import Policy
from hpt_kit.policy.parallel import BatchedPolicy, evaluate
from hpt_kit.train.loop import train
from tests.conftest import HPT_KIT, make_toy


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def tiny_run(out, embodiment: str, registry):
    """A 30-step run on 4 expert episodes: a real, tiny, barely trained checkpoint."""
    recipe = parse_recipe({
        "trunk": {"preset": "custom", "embed_dim": 32, "num_blocks": 1, "num_heads": 2},
        "datasets": [{"embodiment": embodiment, "episodes": 4, "path": str(out / "data.zarr")}],
        "train": {"steps": 30, "batch_size": 16, "warmup_steps": 1, "val_every": 30, "checkpoint_every": 30,
                  "log_every": 10, "val_fraction": 0.25, "device": "cpu"},
    }, "test")
    train(recipe, out / "run", registry)
    return out / "run"


@pytest.fixture(scope="module")
def arm3_run(tmp_path_factory, registry):
    return tiny_run(tmp_path_factory.mktemp("arm3"), "mujoco-arm3", registry)


@pytest.fixture(scope="module")
def reach_run(tmp_path_factory, registry):
    return tiny_run(tmp_path_factory.mktemp("reach"), "metaworld-reach-v3", registry)


def same_episodes(a, b) -> None:
    assert a.successes == b.successes and a.episode_lengths == b.episode_lengths
    assert a.returns == b.returns and a.details == b.details and a.success_rate == b.success_rate


@pytest.mark.parametrize("name,run", [("mujoco-arm3", "arm3_run"), ("metaworld-reach-v3", "reach_run")])
def test_unbatched_workers_equal_serial_bit_for_bit(name, run, registry, request):
    policy = Policy.from_checkpoint(request.getfixturevalue(run))
    emb = registry.embodiment(name)
    req = RolloutRequest(episodes=5, seed=3)
    serial, one = evaluate(emb, policy, req, workers=1)
    parallel, two = evaluate(emb, policy, req, workers=2, batch=False)
    assert (one, two) == (1, 2)
    assert len(set(serial.returns)) == 5  # five different episodes, so a wrong deal or seed shows
    same_episodes(serial, parallel)


def test_batched_workers_equal_serial_to_rounding_on_the_arm(arm3_run, registry):
    policy = Policy.from_checkpoint(arm3_run)
    emb = registry.embodiment("mujoco-arm3")
    req = RolloutRequest(episodes=5, seed=3)
    serial, _ = evaluate(emb, policy, req, workers=1)
    batched, used = evaluate(emb, policy, req, workers=3)
    assert used == 3
    assert batched.successes == serial.successes and batched.episode_lengths == serial.episode_lengths
    np.testing.assert_allclose(batched.returns, serial.returns, rtol=1e-5)


def test_batched_prediction_is_one_network_call_per_step(arm3_run):
    """Three robots due at once: one call to the network's predict with a batch of three."""
    policy = Policy.from_checkpoint(arm3_run)
    batched = BatchedPolicy(policy, 3)
    calls = []
    predict = policy.model.predict
    policy.model.predict = lambda name, batch: calls.append(batch["state"].shape[0]) or predict(name, batch)
    rng = np.random.default_rng(0)
    obs = {r: {"state": rng.normal(size=policy.spec.observation.state_dim).astype(np.float32)} for r in range(3)}
    actions = batched.act(obs)
    assert calls == [3] and all(a.shape == (3,) for a in actions.values())
    batched.act(obs)  # every robot still has queued actions of its chunk: no prediction
    assert calls == [3]
    for r in range(3):  # each replica's action equals a lone policy's on the same history, to rounding
        lone = policy.replica()
        np.testing.assert_allclose(lone.act(obs[r]), actions[r], atol=1e-5)


def test_worker_videos_are_named_as_serial_ones(arm3_run, registry, tmp_path):
    policy = Policy.from_checkpoint(arm3_run)
    emb = registry.embodiment("mujoco-arm3")
    serial, _ = evaluate(emb, policy, RolloutRequest(2, 3, video_dir=tmp_path / "s", video_format="npz"), workers=1)
    parallel, _ = evaluate(emb, policy, RolloutRequest(2, 3, video_dir=tmp_path / "p", video_format="npz"), workers=2)
    names = [p.split("/")[-1] for p in parallel.videos]
    assert names == [p.split("/")[-1] for p in serial.videos] and len(names) == 2
    assert np.load(parallel.videos[0])["frames"].shape == np.load(serial.videos[0])["frames"].shape


def test_a_bad_action_in_a_worker_is_an_error_naming_the_embodiment(registry):
    envs = registry.embodiment("mujoco-arm3").rollout_envs(RolloutRequest(2, 0))
    with pytest.raises(WorkerError, match=r"mujoco-arm3: evaluation worker \d failed: ValueError: .*action of shape \(2,\), expected \(3,\)"):
        run_in_workers(envs, RolloutRequest(2, 0), 2, lambda obs: {w: np.zeros(2) for w in obs}, lambda w: None)


def test_embodiments_without_rollout_envs_and_other_controllers_run_serially(arm3_run, registry):
    toy = make_toy()
    assert toy.rollout_envs is None
    policy = Policy.from_checkpoint(arm3_run)

    class Still:
        def reset(self):
            pass

        def act(self, observation):
            return np.zeros(3, np.float32)

    _, used = evaluate(registry.embodiment("mujoco-arm3"), Still(), RolloutRequest(2, 0), workers=2)
    assert used == 1
    _, used = evaluate(registry.embodiment("mujoco-arm3"), policy, RolloutRequest(1, 0), workers=4)
    assert used == 1  # never more workers than episodes


@pytest.mark.slow
def test_eval_command_runs_workers(arm3_run):
    out = subprocess.run([HPT_KIT, "eval", str(arm3_run), "--episodes", "3", "--workers", "2", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert (result["workers"], result["batched"], len(result["successes"])) == (2, True, 3)
    serial = json.loads(subprocess.run([HPT_KIT, "eval", str(arm3_run), "--episodes", "3", "--workers", "1", "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    assert (serial["workers"], serial["batched"]) == (1, False) and serial["successes"] == result["successes"]
