"""Chunk streaming through a real server over loopback: a MuJoCo rollout driven per step and by
streamed chunks, a robot loop behind a real delaying proxy (per-step requests miss every period,
streamed chunks do not), the delay the proxy adds, and the protocol's refusals."""

import re
import time

import numpy as np
import pytest

from hpt_kit.client import ChunkStream, PolicyClient, ServerError
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import RolloutRequest
from hpt_kit.lab.delay_proxy import DelayProxy
from hpt_kit.policy import Policy
from hpt_kit.serve.fleet import Fleet
from tests.serve.test_server import Recorder, _sequence, runs, serving  # noqa: F401 - runs is a fixture

ARM = "mujoco-arm3"


@pytest.fixture(scope="module")
def fleet(runs):  # noqa: F811 - the fixture imported above
    return Fleet.load([str(runs["both"])], load_registry(embodiments=False))


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class FirstActions(Recorder):
    """A recorder that also remembers each episode's first observation and action."""

    def __init__(self, inner):
        super().__init__(inner)
        self.firsts, self._fresh = [], False

    def reset(self):
        super().reset()
        self._fresh = True

    def act(self, observation):
        action = super().act(observation)
        if self._fresh:
            self.firsts.append(({k: np.array(v) for k, v in observation.items()}, action))
            self._fresh = False
        return action


def test_a_rollout_through_the_server_per_step_and_by_streamed_chunks(fleet):
    registry = load_registry()
    request = RolloutRequest(episodes=2, seed=5)
    low, high = (np.asarray(b) for b in (fleet.served[ARM].spec.action.low, fleet.served[ARM].spec.action.high))
    with serving(fleet) as (server, url):
        with PolicyClient(url, ARM) as client:
            per_step = Recorder(client)
            stepped = registry.embodiment(ARM).rollout(per_step, request)
        with ChunkStream(PolicyClient(url, ARM)) as stream:
            streamed = FirstActions(stream)
            chunked = registry.embodiment(ARM).rollout(streamed, request)
            assert stream.period_s == pytest.approx(1 / 20) and stream.action_horizon == 4
            received, waits = stream.chunks_received, stream.waits
        stats = server.stats.as_dict(len(server.sessions))
    steps = len(streamed.actions)
    assert steps == len(per_step.actions) > 20 and len(chunked.successes) == len(stepped.successes) == 2
    actions = np.stack(streamed.actions)
    assert np.all(actions >= low - 1e-6) and np.all(actions <= high + 1e-6)
    assert received >= steps / 4  # at least one chunk per 4-step horizon
    assert stats["chunks"] - received in (0, 1)  # the last may have been in flight when the episode ended
    assert waits >= 2  # each episode's first step waits for its first chunk
    # Each episode's first action is the first row of the chunk predicted from its first observation.
    local = Policy(fleet.model, ARM, execute_steps=1)
    assert len(streamed.firsts) == 2
    for first, action in streamed.firsts:
        local.reset()
        np.testing.assert_allclose(action, np.clip(local.act(first), low, high), atol=1e-5)


def _loop(controller, observations, period):
    """A robot loop at ``period`` s: how long each step's act took."""
    took = []
    controller.reset()
    for observation in observations:
        start = time.perf_counter()
        controller.act({"state": observation})
        took.append(time.perf_counter() - start)
        time.sleep(max(0.0, period - took[-1]))
    return np.asarray(took)


def test_a_round_trip_longer_than_the_period_misses_every_step_per_step_but_not_streamed(fleet):
    # 250 ms added round trip against a 200 ms period: every per-step act takes at least 250 ms. A
    # streamed chunk covers 4 steps (800 ms); the next is asked for two steps after the last came.
    period, delay = 0.2, 0.25
    dim = fleet.served[ARM].spec.observation.state_dim
    with serving(fleet) as (_, url), DelayProxy(_port(url), delay) as proxy:
        with PolicyClient(proxy.url, ARM) as client:
            per_step = _loop(client, _sequence(dim, 5, seed=1), period)
        with ChunkStream(PolicyClient(proxy.url, ARM)) as stream:
            streamed = _loop(stream, _sequence(dim, 14, seed=1), period)
            waits = stream.waits
    assert np.all(per_step >= delay) and int((per_step > period).sum()) == 5
    assert streamed[0] >= delay  # the first step waits for the first chunk
    assert int((streamed[1:] > period).sum()) <= 1 and waits <= 2, (streamed, waits)  # generous: a busy machine


def test_streamed_rows_are_aligned_by_step_index(fleet):
    # ensemble=None executes one row as it came: for step t it must be row t - s of the chunk predicted
    # from step s's observation (observation_horizon 1), s within the 4 steps before t. The added
    # delay makes chunks arrive steps after they were asked for, so rows past the first are used.
    dim = fleet.served[ARM].spec.observation.state_dim
    low, high = (np.asarray(b) for b in (fleet.served[ARM].spec.action.low, fleet.served[ARM].spec.action.high))
    states = _sequence(dim, 16, seed=7)
    local = Policy(fleet.model, ARM, execute_steps=1)
    expected = []
    for state in states:  # the chunk the server predicts from each step's observation alone
        local.reset()
        local.observe({"state": state})
        expected.append(np.clip(fleet.predict([(ARM, local.history)])[0], low, high))
    with serving(fleet) as (_, url), DelayProxy(_port(url), 0.12) as proxy:
        with ChunkStream(PolicyClient(proxy.url, ARM), ensemble=None) as stream:
            stream.reset()
            actions = []
            for state in states:
                actions.append(stream.act({"state": state}))
                time.sleep(0.05)
    offsets = []
    for t, action in enumerate(actions):
        matches = [t - s for s in range(max(0, t - 3), t + 1) if np.allclose(expected[s][t - s], action, atol=1e-5)]
        assert matches, f"step {t}: no chunk row predicted for it matches"
        offsets.append(min(matches))
    assert offsets[0] == 0 and max(offsets) >= 2, offsets


def test_the_proxy_adds_its_delay_to_every_round_trip(fleet):
    with serving(fleet) as (_, url), DelayProxy(_port(url), 0.1) as proxy, PolicyClient(url) as direct:
        with PolicyClient(proxy.url) as delayed:
            times = []
            for client in (direct, delayed):
                start = time.perf_counter()
                client.call("stats")
                times.append(time.perf_counter() - start)
    assert times[1] >= 0.1 and times[1] > times[0]


def test_chunk_requests_are_checked_and_a_robot_cannot_mix_modes(fleet):
    dim = fleet.served[ARM].spec.observation.state_dim
    state = {"state": np.zeros(dim, np.float32)}
    with serving(fleet, token="s3cret") as (_, url):
        with pytest.raises(ServerError, match="requires the token"):
            ChunkStream(PolicyClient(url, ARM, token=""))
        with PolicyClient(url, ARM, robot_id="r", token="s3cret") as client:
            client.reset()
            reply = client.call("chunk", robot="r", observations=[state], step=0)
            assert reply["step"] == 0 and reply["chunk"].shape == (4, fleet.served[ARM].spec.action.dim)
            assert reply["control_hz"] == pytest.approx(20.0) and reply["period_s"] == pytest.approx(0.05)
            # observation_horizon 1: one observation is the whole history, so steps may be skipped
            assert client.call("chunk", robot="r", observations=[state], step=3)["step"] == 3
            refusals = {
                "step: observations from step 3 repeat steps already received": dict(observations=[state], step=3),
                "observations: a list of 1 to 1": dict(observations=[state, state], step=5),
                "observations[0]: observation.state: shape": dict(observations=[{"state": np.zeros(dim + 1, np.float32)}], step=4),
                "step: the non-negative integer": dict(observations=[state], step="1"),
                "robot: 'r' streams chunks since its reset; reset it to act step by step": None,
            }
            for message, fields in refusals.items():
                with pytest.raises(ServerError, match=re.escape(message)):
                    client.call("chunk", robot="r", **fields) if fields else client.act(state)
            client.reset()
            client.act(state)
            with pytest.raises(ServerError, match="acts step by step since its reset"):
                client.call("chunk", robot="r", observations=[state], step=1)
            with pytest.raises(ServerError, match="robot: unknown 'nobody'"):
                client.call("chunk", robot="nobody", observations=[state], step=0)


def test_a_longer_history_is_completed_from_the_observations_since_the_last_request():
    # observation_horizon 2: requests at steps 0, 1, 3 (2 and 3 sent), 7 (the last 2 of 4 skipped steps)
    # and 8 predict what the in-process policy, fed every step, predicts there.
    import dataclasses

    import torch

    from hpt_kit.core.presets import trunk_config
    from hpt_kit.lab.bench import standard_spec, standard_stats
    from hpt_kit.models.hpt import HPT
    from hpt_kit.serve.fleet import Served

    torch.manual_seed(0)
    spec = dataclasses.replace(standard_spec("two-step"), observation_horizon=2)
    model = HPT(trunk_config("tiny"), {"two-step": spec}, {"two-step": standard_stats()}, load_registry(load_entrypoints=False))
    fleet = Fleet(model, {"two-step": Served(spec, 1, None, "test")}, "test", torch.device("cpu"))
    rng = np.random.default_rng(0)
    observations = [
        {"state": rng.standard_normal(39).astype(np.float32), "image_features": rng.standard_normal((1, 49, 512)).astype(np.float32)}
        for _ in range(11)
    ]
    local = Policy(model, "two-step", execute_steps=1)
    expected = [np.clip(local.act(o), -1, 1) for o in observations]  # row 0 of the chunk predicted at each step
    with serving(fleet) as (_, url), PolicyClient(url, "two-step", robot_id="r") as client:
        client.reset()
        for step, first in ((0, 0), (1, 1), (3, 2), (7, 6), (8, 8)):
            reply = client.call("chunk", robot="r", observations=observations[first : step + 1], step=step)
            np.testing.assert_allclose(reply["chunk"][0], expected[step], atol=1e-5, err_msg=f"step {step}")
        with pytest.raises(ServerError, match="observations: steps 9 to 9 are missing"):
            client.call("chunk", robot="r", observations=observations[10:11], step=10)


def test_every_row_of_a_streamed_chunk_is_clipped_to_the_advertised_bounds_and_counted(fleet):
    from tests.serve.test_safety import _narrowed

    narrow = _narrowed(fleet, ARM, 0.05)
    dim = fleet.served[ARM].spec.observation.state_dim
    with serving(fleet) as (_, wide_url), serving(narrow) as (server, url):
        with PolicyClient(wide_url, ARM, robot_id="w") as wide, PolicyClient(url, ARM, robot_id="n") as client:
            meta = client.metadata["embodiments"][ARM]
            low, high = np.asarray(meta["action_low"]), np.asarray(meta["action_high"])
            wide.reset()
            client.reset()
            raw, got = [], []
            for step, state in enumerate(_sequence(dim, 4, seed=3)):
                raw.append(wide.call("chunk", robot="w", observations=[{"state": state}], step=step)["chunk"])
                got.append(client.call("chunk", robot="n", observations=[{"state": state}], step=step)["chunk"])
    raw, got = np.concatenate(raw), np.concatenate(got)  # (4 chunks x 4 rows, A)
    outside = (raw < low) | (raw > high)
    assert outside.any()  # the narrowed bounds did bite
    np.testing.assert_allclose(got, np.clip(raw, low, high), atol=1e-5)
    stats = server.stats
    assert (stats.chunks, stats.actions) == (4, 16)
    assert stats.clipped_actions == int(outside.any(axis=1).sum()) and stats.clipped_values == int(outside.sum())
