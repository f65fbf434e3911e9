"""What keeps a served policy within what the robot was told: every action clipped to the advertised
bounds (and counted in ``stats``), chunk execution chosen per embodiment at serve time, the source's
names in ``metadata``, and a missing token explained in one line."""

import dataclasses

import numpy as np
import pytest

from hpt_kit.client import PolicyClient, ServerError
from hpt_kit.core.registry import load_registry
from hpt_kit.policy import Policy
from hpt_kit.serve.fleet import Fleet, ServeError
from tests.serve.test_server import _sequence, runs, serving  # noqa: F401 - runs is a fixture


@pytest.fixture(scope="module")
def fleet(runs):  # noqa: F811 - the fixture imported above
    return Fleet.load([str(runs["both"])], load_registry(embodiments=False))


def _narrowed(fleet: Fleet, name: str, half_width: float) -> Fleet:
    """The same network served with action bounds of +- ``half_width`` around the middle of the
    embodiment's own bounds: a network trained on the wide ones will step outside them."""
    served = fleet.served[name]
    action = served.spec.action
    mid = (np.asarray(action.low) + np.asarray(action.high)) / 2
    narrow = dataclasses.replace(action, low=tuple(mid - half_width), high=tuple(mid + half_width))
    spec = dataclasses.replace(served.spec, action=narrow)
    return Fleet(fleet.model, {name: dataclasses.replace(served, spec=spec)}, fleet.trunk_sha256, fleet.device)


def test_every_served_action_is_clipped_to_the_advertised_bounds_and_counted(fleet):
    name = "mujoco-arm3"
    narrow = _narrowed(fleet, name, 0.05)
    dim = fleet.served[name].spec.observation.state_dim
    states = _sequence(dim, 12, seed=3)
    with serving(fleet) as (_, wide_url), serving(narrow) as (server, url):
        with PolicyClient(wide_url, name) as wide, PolicyClient(url, name) as client:
            meta = client.metadata["embodiments"][name]
            low, high = np.asarray(meta["action_low"]), np.asarray(meta["action_high"])
            assert meta["action_clipped"] is True
            raw = np.stack([wide.act({"state": s}) for s in states])
            got = np.stack([client.act({"state": s}) for s in states])
            stats = client.call("stats")
    assert np.all(got >= low - 1e-6) and np.all(got <= high + 1e-6)
    np.testing.assert_allclose(got, np.clip(raw, low, high), atol=1e-5)
    outside = (raw < low) | (raw > high)
    assert outside.any()  # the narrowed bounds did bite
    assert stats["clipped_actions"] == int(outside.any(axis=1).sum()) == server.stats.clipped_actions
    assert stats["clipped_values"] == int(outside.sum())


def test_chunk_execution_is_chosen_per_embodiment_at_serve_time(runs, fleet):  # noqa: F811
    served = Fleet.load([str(runs["both"])], load_registry(embodiments=False))
    served.set_chunks("mujoco-arm3", execute_steps=1)
    served.set_chunks("mujoco-arm4", ensemble=0.01)
    local = Policy(served.model, "mujoco-arm3", execute_steps=1)
    local_ensemble = Policy(served.model, "mujoco-arm4", ensemble=0.01)
    dim3 = served.served["mujoco-arm3"].spec.observation.state_dim
    dim4 = served.served["mujoco-arm4"].spec.observation.state_dim
    with serving(served) as (server, url), PolicyClient(url, "mujoco-arm3") as a, PolicyClient(url, "mujoco-arm4") as b:
        meta = a.metadata["embodiments"]
        assert (meta["mujoco-arm3"]["execute_steps"], meta["mujoco-arm3"]["chunks_from"]) == (1, "option")
        assert meta["mujoco-arm4"]["temporal_ensemble"] == 0.01 and meta["mujoco-arm4"]["execute_steps"] == 0
        for s3, s4 in zip(_sequence(dim3, 6, seed=1), _sequence(dim4, 6, seed=2)):
            np.testing.assert_allclose(a.act({"state": s3}), np.clip(local.act({"state": s3}), *_bounds(served, "mujoco-arm3")), atol=1e-5)
            np.testing.assert_allclose(b.act({"state": s4}), np.clip(local_ensemble.act({"state": s4}), *_bounds(served, "mujoco-arm4")), atol=1e-5)
        assert server.stats.predictions == 12  # one chunk per step for each: re-planned every step, both ways
    # The run's own plan stays for a fleet nobody changed (eval.execute_steps = 2 in its recipe).
    assert fleet.served["mujoco-arm3"].execute_steps == 2 and fleet.served["mujoco-arm3"].chunks_from == "recipe"
    with pytest.raises(ServeError, match=r"outside 0\.\.\d+"):
        served.set_chunks("mujoco-arm3", execute_steps=9)
    with pytest.raises(ServeError, match="not both"):
        served.set_chunks("mujoco-arm3", execute_steps=1, ensemble=0.1)
    with pytest.raises(ServeError, match="unknown 'arm9'"):
        served.set_chunks("arm9", execute_steps=1)


def _bounds(fleet: Fleet, name: str) -> tuple[np.ndarray, np.ndarray]:
    action = fleet.served[name].spec.action
    return np.asarray(action.low), np.asarray(action.high)


def test_a_missing_or_wrong_token_is_one_line_naming_the_setting(fleet):
    with serving(fleet, token="s3cret") as (server, url):
        with pytest.raises(ServerError, match="no token was sent; set HPT_KIT_TOKEN") as none:
            PolicyClient(url, token="")
        with pytest.raises(ServerError, match="the token sent was refused") as wrong:
            PolicyClient(url, token="wrong")
        assert "serve --token" in str(none.value) and "\n" not in str(wrong.value)
        assert server.stats.refused_connections == 2
