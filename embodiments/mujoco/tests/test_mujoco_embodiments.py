"""The MuJoCo embodiments against the kit's contract, plus the facts their README promises."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest
from hpt_kit import ConvertRequest, Embodiment, RolloutRequest
from hpt_kit.contract import check_embodiment, registered_embodiments

from hpt_kit_mujoco import plugin

STATE_ONLY = ("mujoco-arm3", "mujoco-arm4")
JOINTS = {"mujoco-arm3": 3, "mujoco-arm4": 4}


@pytest.fixture(scope="module")
def registered() -> dict[str, Embodiment]:
    return registered_embodiments(plugin, "mujoco")  # through the kit's own validating registrar


def test_the_hook_registers_every_embodiment(registered):
    assert set(registered) == {"mujoco-arm3", "mujoco-arm4", "mujoco-arm3-rgb"}


def test_the_entry_point_names_the_plugin_module():
    try:
        dist = metadata.distribution("hpt-kit-mujoco")
    except metadata.PackageNotFoundError:
        pytest.skip("hpt-kit-mujoco is not installed")
    points = {ep.name: ep.value for ep in dist.entry_points if ep.group == "hpt_kit"}
    assert points == {"mujoco": "hpt_kit_mujoco.plugin"}


@pytest.mark.parametrize("name", STATE_ONLY)
def test_contract(registered, name):
    emb = registered[name]
    n = JOINTS[name]
    assert emb.observation.state_dim == 3 * n + 9
    assert emb.action.dim == n and emb.action.control_hz == pytest.approx(20.0)
    assert emb.head.action_horizon == 4 and emb.max_episode_steps == 50
    report = check_embodiment(emb)
    for episode in report.episodes:
        assert 1 <= len(episode["state"]) <= emb.max_episode_steps
        assert np.abs(episode["action"]).max() <= 1.0
        state = episode["state"]
        ee, target, offset = state[:, -9:-6], state[:, -6:-3], state[:, -3:]
        np.testing.assert_allclose(offset, target - ee, atol=1e-6)
        assert np.ptp(target, axis=0).max() == 0.0  # the target stays put within an episode
    assert report.controller_calls > 0


@pytest.mark.parametrize("name", STATE_ONLY)
def test_expert_reaches_the_target(registered, name):
    result = registered[name].expert_rollout(RolloutRequest(episodes=20, seed=0))
    assert sum(result.successes) >= 19, result
    assert max(result.episode_lengths) <= 50


@pytest.mark.parametrize("name", STATE_ONLY)
def test_conversion_is_deterministic_and_reports_notes(registered, name):
    emb = registered[name]
    first = ConvertRequest(episodes=3, seed=7)
    again = ConvertRequest(episodes=3, seed=7)
    a, b = list(emb.convert_dataset(first)), list(emb.convert_dataset(again))
    other = list(emb.convert_dataset(ConvertRequest(episodes=3, seed=8)))
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() == {"state", "action"}
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(a[0]["state"][0], other[0]["state"][0])
    assert first.notes["episodes_dropped"] == first.notes["episodes_attempted"] - 3
    assert first.notes["expert_success_rate"] >= 0.95
    assert first.notes["mujoco_version"]


def test_rollout_draws_other_episodes_than_conversion(registered):
    emb = registered["mujoco-arm3"]
    converted = next(iter(emb.convert_dataset(ConvertRequest(episodes=1, seed=0))))

    class Recorder:
        def __init__(self) -> None:
            self.first = None

        def reset(self) -> None:
            pass

        def act(self, observation):
            if self.first is None:
                self.first = observation["state"].copy()
            return np.zeros(3, dtype=np.float32)

    recorder = Recorder()
    result = emb.rollout(recorder, RolloutRequest(episodes=1, seed=0))
    assert result.successes == (False,)  # standing still never reaches a target >= 0.1 m away
    assert result.episode_lengths == (50,)
    assert not np.array_equal(recorder.first, converted["state"][0])


def test_state_only_variants_reject_render(registered):
    with pytest.raises(ValueError, match="mujoco-arm3-rgb"):
        registered["mujoco-arm3"].convert_dataset(ConvertRequest(episodes=1, seed=0, render=True))


def test_a_wrongly_shaped_action_is_an_error(registered):
    class Wrong:
        def reset(self) -> None:
            pass

        def act(self, observation):
            return np.zeros(5, dtype=np.float32)

    with pytest.raises(ValueError, match=r"shape \(5,\), expected \(3,\)"):
        registered["mujoco-arm3"].rollout(Wrong(), RolloutRequest(episodes=1, seed=0))


RENDER_SCRIPT = textwrap.dedent(
    """
    import tempfile
    from pathlib import Path
    import numpy as np
    from hpt_kit import ConvertRequest, RolloutRequest
    from hpt_kit.contract import check_embodiment, registered_embodiments
    from hpt_kit.core.spec import validate_episode
    from hpt_kit_mujoco.plugin import ARM3_RGB, make_embodiment, ARM3

    emb = make_embodiment(ARM3_RGB)
    episodes = list(emb.convert_dataset(ConvertRequest(episodes=2, seed=0, render=True)))
    assert len(episodes) == 2
    for i, ep in enumerate(episodes):
        ep = validate_episode(emb, i, ep)
        assert ep["image"].shape == (len(ep["state"]), 1, 64, 64, 3) and ep["image"].dtype == np.uint8
        assert ep["image"].std() > 5  # a real picture, not a blank frame
    check_embodiment(emb, episodes=1, rollout_episodes=1)
    with tempfile.TemporaryDirectory() as tmp:
        result = make_embodiment(ARM3).expert_rollout(RolloutRequest(episodes=1, seed=0, video_dir=Path(tmp)))
        from hpt_kit.video import read_frames

        frames = read_frames(result.videos[0])  # mp4, decoded back
        assert frames.shape[1:] == (128, 128, 3) and len(frames) == result.episode_lengths[0] + 1
    print("rendered ok")
    """
)


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is None, reason="libosmesa6 is not installed")
def test_rgb_variant_renders_with_osmesa():
    # MuJoCo picks its GL backend when first imported, so rendering runs in a fresh interpreter.
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    proc = subprocess.run(
        [sys.executable, "-c", RENDER_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "rendered ok" in proc.stdout
