"""The policy server over loopback, with real websockets and real tiny checkpoints: the same actions as
the in-process Policy, batching across robots and embodiments, bad requests that harm nobody else,
the token, idle robots, and refused checkpoint sets."""

import asyncio
import queue
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from hpt_kit.client import PolicyClient, ServerError
from hpt_kit.core.recipe import parse_recipe
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import RolloutRequest
from hpt_kit.core.wire import decode, encode
from hpt_kit.models.hpt import HPT
from hpt_kit.policy import Policy
from hpt_kit.serve.fleet import Fleet, ServeError
from hpt_kit.serve.server import PolicyServer, ServerConfig
from hpt_kit.train.loop import train
from hpt_kit.weights.checkpoint import resolve_checkpoint


def _pretrain(root: Path, names, seed=0, steps=30) -> Path:
    recipe = parse_recipe(
        {
            "run": {"seed": seed},
            "trunk": {"preset": "tiny"},
            "datasets": [{"embodiment": n, "episodes": 8} for n in names],
            "train": {"steps": steps, "batch_size": 32, "lr": 1e-3, "warmup_steps": 2, "val_every": steps, "checkpoint_every": steps},
            "eval": {"execute_steps": 2},
        },
        "test",
    )
    train(recipe, root, load_registry())
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("serve")
    os.environ["HPT_KIT_DATA"] = str(root / "datasets")
    return {
        "both": _pretrain(root / "both", ["mujoco-arm3", "mujoco-arm4"]),
        "other": _pretrain(root / "other", ["mujoco-arm3"], seed=1, steps=2),
    }


@pytest.fixture(scope="module")
def fleet(runs):
    return Fleet.load([str(runs["both"])], load_registry(embodiments=False))


@contextmanager
def serving(fleet, **config):
    server = PolicyServer(fleet, ServerConfig(port=0, **config))
    ports: queue.Queue = queue.Queue()
    thread = threading.Thread(target=lambda: asyncio.run(server.run(ports.put)), daemon=True)
    thread.start()
    try:
        yield server, f"ws://127.0.0.1:{ports.get(timeout=30)}"
    finally:
        server.stop()
        thread.join(10)
        assert not thread.is_alive()


class Recorder:
    """A controller that remembers what the wrapped one answered."""

    def __init__(self, inner):
        self.inner, self.actions = inner, []

    def reset(self):
        self.inner.reset()

    def act(self, observation):
        action = self.inner.act(observation)
        self.actions.append(np.asarray(action))
        return action


def test_a_rollout_through_the_server_equals_the_in_process_policy(runs, fleet):
    registry = load_registry()
    ckpt = resolve_checkpoint(runs["both"])
    local = Recorder(Policy(HPT.from_checkpoint(ckpt, registry), "mujoco-arm3", execute_steps=2))
    request = RolloutRequest(episodes=3, seed=5)
    expected = registry.embodiment("mujoco-arm3").rollout(local, request)
    with serving(fleet) as (_, url), PolicyClient(url, "mujoco-arm3") as client:
        remote = Recorder(client)
        got = registry.embodiment("mujoco-arm3").rollout(remote, request)
        assert client.metadata["embodiments"]["mujoco-arm3"]["execute_steps"] == 2
    assert got.successes == expected.successes
    assert len(remote.actions) == len(local.actions) > 20
    np.testing.assert_allclose(np.stack(remote.actions), np.stack(local.actions), atol=1e-5)


def _sequence(dim, steps, seed):
    return np.random.default_rng(seed).uniform(-1, 1, size=(steps, dim)).astype(np.float32)


def test_concurrent_robots_of_two_embodiments_are_batched_and_each_keeps_its_own_state(runs, fleet):
    registry = load_registry(embodiments=False)
    model = HPT.from_checkpoint(resolve_checkpoint(runs["both"]), registry)
    robots = [("mujoco-arm3", 0), ("mujoco-arm3", 1), ("mujoco-arm4", 2), ("mujoco-arm4", 3)]
    dims = {n: model.specs[n].observation.state_dim for n in ("mujoco-arm3", "mujoco-arm4")}
    expected = {}
    for name, seed in robots:
        policy = Policy(model, name, execute_steps=2)
        bounds = model.specs[name].action.low, model.specs[name].action.high  # the server clips to them
        expected[seed] = np.clip(np.stack([policy.act({"state": s}) for s in _sequence(dims[name], 12, seed)]), *bounds)
    got, errors = {}, []
    with serving(fleet, batch_window_ms=30.0) as (server, url):
        barrier = threading.Barrier(len(robots))

        def drive(name, seed):
            try:
                with PolicyClient(url, name, robot_id=f"robot-{seed}") as client:
                    client.reset()
                    barrier.wait()
                    got[seed] = np.stack([client.act({"state": s}) for s in _sequence(dims[name], 12, seed)])
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=drive, args=r) for r in robots]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stats = server.stats.as_dict(len(server.sessions))
    assert not errors, errors
    for _, seed in robots:
        np.testing.assert_allclose(got[seed], expected[seed], atol=1e-5)
    assert stats["predictions"] == 4 * 6  # a chunk of 2 every other step, per robot
    assert stats["largest_batch"] >= 2 and stats["mean_batch"] > 1.0  # robots of both embodiments shared passes


def test_a_burst_of_bad_requests_gets_error_replies_while_another_robot_is_served(fleet):
    import msgpack
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect

    dim = fleet.served["mujoco-arm3"].spec.observation.state_dim
    complex_state = {"__ndarray__": True, "dtype": "complex64", "shape": [dim], "data": bytes(8 * dim)}
    nan = np.zeros(dim, np.float32)
    nan[1] = np.nan
    bad = [
        "a text frame",
        b"\xc1 not msgpack",
        encode({"id": 1}),
        encode({"id": 2, "op": "fly"}),
        encode({"id": 3, "op": "reset", "robot": "r", "embodiment": "robosuite-panda"}),
        encode({"id": 4, "op": "act", "robot": "nobody", "observation": {"state": np.zeros(dim, np.float32)}}),
        encode({"id": 5, "op": "reset", "robot": "r", "embodiment": "mujoco-arm3"}),
        encode({"id": 6, "op": "act", "robot": "r", "observation": {"state": np.zeros(dim + 1, np.float32)}}),
        encode({"id": 7, "op": "act", "robot": "r", "observation": {"state": nan}}),
        encode({"id": 8, "op": "act", "robot": "r", "observation": {"joints": np.zeros(dim, np.float32)}}),
        msgpack.packb({"id": 9, "op": "act", "robot": "r", "observation": {"state": complex_state}}),
    ]
    expected = [
        "messages are binary msgpack frames",
        "not a msgpack message",
        "op: unknown None",
        "op: unknown 'fly'",
        "embodiment: unknown 'robosuite-panda'; served: mujoco-arm3, mujoco-arm4",
        "robot: unknown 'nobody' (reset it first",
        None,
        f"observation.state: shape ({dim + 1},), expected ({dim},)",
        "observation.state: non-finite value at index 1",
        "observation.state: missing",
        "arrays of dtype complex64 are not accepted",
    ]
    with serving(fleet) as (server, url), PolicyClient(url, "mujoco-arm3") as good:
        good.reset()
        served = []
        with connect(url) as raw:
            for _ in range(5):  # the burst, five times over, with a good robot acting in between
                for payload, want in zip(bad, expected):
                    raw.send(payload)
                    reply = decode(raw.recv(timeout=10))
                    if want is None:
                        assert reply["ok"]
                    else:
                        assert not reply["ok"] and want in reply["error"], (want, reply)
                    served.append(good.act({"state": np.zeros(dim, np.float32)}))
        with pytest.raises(ConnectionClosedError, match="1009"), connect(url, max_size=None) as huge:  # past the limit
            huge.send(b"\x00" * (17 * 2**20))
            huge.recv(timeout=10)
        served.append(good.act({"state": np.zeros(dim, np.float32)}))
    assert len(served) == 56 and all(a.shape == (fleet.served["mujoco-arm3"].spec.action.dim,) for a in served)


def test_the_token_is_required_when_set(fleet):
    with serving(fleet, token="s3cret") as (server, url):
        with pytest.raises(ServerError, match="requires the token"):
            PolicyClient(url, token="")
        with pytest.raises(ServerError, match="requires the token"):
            PolicyClient(url, token="wrong")
        with PolicyClient(url, token="s3cret") as client:
            assert set(client.metadata["embodiments"]) == {"mujoco-arm3", "mujoco-arm4"}
        assert server.stats.refused_connections == 2


def test_an_idle_robot_loses_its_state(fleet):
    with serving(fleet, idle_timeout_s=0.2) as (server, url), PolicyClient(url, "mujoco-arm3") as client:
        dim = fleet.served["mujoco-arm3"].spec.observation.state_dim
        client.reset()
        client.act({"state": np.zeros(dim, np.float32)})
        time.sleep(0.8)
        with pytest.raises(ServerError, match="robot: unknown"):
            client.act({"state": np.zeros(dim, np.float32)})
        assert not server.sessions


def test_checkpoints_with_different_trunks_are_refused(runs):
    with pytest.raises(ServeError, match="different trunks and cannot share one server"):
        Fleet.load([str(runs["both"]), str(runs["other"])], load_registry(embodiments=False))
    with pytest.raises(ServeError, match="'mujoco-arm3' is in both"):
        Fleet.load([str(runs["both"]), str(runs["both"])], load_registry(embodiments=False))


def test_the_onnx_backend_serves_the_same_actions(runs, fleet):
    onnx = Fleet.load([str(runs["both"])], load_registry(embodiments=False), backend="onnx")
    dim = fleet.served["mujoco-arm4"].spec.observation.state_dim
    with serving(fleet) as (_, torch_url), serving(onnx) as (_, onnx_url):
        with PolicyClient(torch_url, "mujoco-arm4") as a, PolicyClient(onnx_url, "mujoco-arm4") as b:
            assert b.metadata["backend"] == "onnx"
            for state in _sequence(dim, 8, seed=4):
                np.testing.assert_allclose(b.act({"state": state}), a.act({"state": state}), atol=1e-5)


def test_the_openvino_backend_serves_the_same_actions(runs, fleet):
    pytest.importorskip("openvino")
    openvino = Fleet.load([str(runs["both"])], load_registry(embodiments=False), backend="openvino")
    dim = fleet.served["mujoco-arm4"].spec.observation.state_dim
    with serving(fleet) as (_, torch_url), serving(openvino) as (_, openvino_url):
        with PolicyClient(torch_url, "mujoco-arm4") as a, PolicyClient(openvino_url, "mujoco-arm4") as b:
            assert b.metadata["backend"] == "openvino"
            for state in _sequence(dim, 8, seed=4):
                np.testing.assert_allclose(b.act({"state": state}), a.act({"state": state}), atol=1e-5)


def test_the_int8_backend_serves_actions_within_its_bound(runs, fleet):
    from hpt_kit.policy.onnx import INT8_BOUND

    int8 = Fleet.load([str(runs["both"])], load_registry(embodiments=False), backend="onnx-int8")
    spec = fleet.served["mujoco-arm4"].spec
    dim, span = spec.observation.state_dim, np.subtract(spec.action.high, spec.action.low)
    with serving(fleet) as (_, torch_url), serving(int8) as (_, int8_url):
        with PolicyClient(torch_url, "mujoco-arm4") as a, PolicyClient(int8_url, "mujoco-arm4") as b:
            assert b.metadata["backend"] == "onnx-int8"
            for state in _sequence(dim, 8, seed=4):
                got, want = b.act({"state": state}), a.act({"state": state})
                assert np.all(np.abs(got - want) <= INT8_BOUND * span)  # per unit of each dimension's range
