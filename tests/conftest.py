"""Shared fixtures: an isolated dataset root and a toy embodiment with known dynamics.

The toy embodiment is a real Embodiment (spec, converter, rollout runner) on a 1-D point mass whose
expert action is a fixed linear function of the state, so learning it is quick and checkable. Its
camera variant (``make_image_toy``) shows the goal only in a small image; ``image_spec`` is a bare
spec with state and camera views for model-level tests.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from hpt_kit.core.spec import (
    ActionSpec,
    Embodiment,
    EmbodimentData,
    HeadSpec,
    ImageSpec,
    ObservationSpec,
    RolloutResult,
    StemSpec,
)

ROOT = Path(__file__).resolve().parents[1]
HPT_KIT = str(Path(sys.executable).with_name("hpt-kit"))


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "datasets"
    monkeypatch.setenv("HPT_KIT_DATA", str(root))
    return root


def toy_expert(state: np.ndarray) -> np.ndarray:
    """Drive position to the goal: action = clip(2 * (goal - pos))."""
    return np.clip(2.0 * (state[..., 1:2] - state[..., 0:1]), -1.0, 1.0)


def point_mass_rollout(controller, request, length: int, observe) -> RolloutResult:
    """The toys' closed loop: a point mass moved by 0.25 * action toward a random goal for ``length``
    steps; ``observe(pos, goal)`` is what the controller sees. Success: within 0.1 of the goal."""
    rng = np.random.default_rng(request.seed)
    successes, returns = [], []
    for _ in range(request.episodes):
        controller.reset()
        pos, goal = rng.uniform(-1, 1), rng.uniform(-1, 1)
        for _ in range(length):
            pos += 0.25 * float(np.clip(controller.act(observe(pos, goal)), -1, 1)[0])
        successes.append(abs(pos - goal) < 0.1)
        returns.append(-abs(pos - goal))
    return RolloutResult.from_episodes(successes, returns)


def make_toy(name: str = "toy", length: int = 12, action_horizon: int = 3, observation_horizon: int = 2) -> Embodiment:
    def convert(request):
        rng = np.random.default_rng(request.seed)
        for _ in range(request.episodes):
            n = int(rng.integers(length // 2, length + 1))
            pos, goal = rng.uniform(-1, 1), rng.uniform(-1, 1)
            states, actions = [], []
            for _ in range(n):
                s = np.array([pos, goal, 0.0], np.float32)
                a = toy_expert(s)
                states.append(s)
                actions.append(a)
                pos += 0.25 * float(a[0])
            yield {"state": np.stack(states), "action": np.stack(actions).astype(np.float32)}
        request.notes["toy"] = True

    def rollout(controller, request):
        def observe(pos, goal):
            return {"state": np.array([pos, goal, 0.0], np.float32)}

        return point_mass_rollout(controller, request, length, observe)

    return Embodiment(
        name=name,
        observation=ObservationSpec(state_dim=3),
        action=ActionSpec(dim=1, low=(-1.0,), high=(1.0,), control_hz=10.0),
        convert_dataset=convert,
        rollout=rollout,
        stems=(StemSpec("state", hidden=(32,), num_tokens=4, num_heads=4),),
        head=HeadSpec(hidden=(64,), action_horizon=action_horizon),
        observation_horizon=observation_horizon,
        max_episode_steps=length,
    )


@pytest.fixture
def toy() -> Embodiment:
    return make_toy()


def goal_frame(goal: float, size: int) -> np.ndarray:
    """One camera view (1, size, size, 3) uint8: a bright column at the goal's position."""
    frame = np.zeros((1, size, size, 3), np.uint8)
    frame[0, :, int(round((goal + 1) / 2 * (size - 1)))] = 255
    return frame


def make_image_toy(name: str = "toy-cam", size: int = 32, length: int = 8) -> Embodiment:
    """The toy point mass with its goal visible only in a camera frame (the state holds zeros there)."""

    def convert(request):
        rng = np.random.default_rng(request.seed)
        for _ in range(request.episodes):
            pos, goal = rng.uniform(-1, 1), rng.uniform(-1, 1)
            states, frames, actions = [], [], []
            for _ in range(length):
                a = toy_expert(np.array([pos, goal, 0.0], np.float32))
                states.append(np.array([pos, 0.0, 0.0], np.float32))
                frames.append(goal_frame(goal, size))
                actions.append(a)
                pos += 0.25 * float(a[0])
            yield {"state": np.stack(states), "image": np.stack(frames), "action": np.stack(actions)}

    def rollout(controller, request):
        def observe(pos, goal):
            return {"state": np.array([pos, 0.0, 0.0], np.float32), "image": goal_frame(goal, size)}

        return point_mass_rollout(controller, request, length, observe)

    return Embodiment(
        name=name,
        observation=ObservationSpec(state_dim=3, image=ImageSpec(("top",), size, size)),
        action=ActionSpec(dim=1, low=(-1.0,), high=(1.0,), control_hz=10.0),
        convert_dataset=convert,
        rollout=rollout,
        stems=(
            StemSpec("state", hidden=(32,), num_tokens=4, num_heads=4),
            StemSpec(
                "image", kind="resnet", hidden=(32,), num_tokens=4, num_heads=4, options={"weights": None}
            ),
        ),
        head=HeadSpec(hidden=(64,), action_horizon=2),
        observation_horizon=1,
        max_episode_steps=length,
    )


def image_spec(name="cam", views=("front", "wrist"), size=32, horizon=2, precomputed=None, **options):
    """An embodiment spec with state and camera views; ``precomputed`` = the encoder of its features."""
    stems = (
        StemSpec("state", num_tokens=4, num_heads=4),
        StemSpec(
            "image",
            kind="resnet",
            hidden=(64,),
            num_tokens=4,
            num_heads=4,
            options={"weights": None, **options},
        ),
    )
    obs = ObservationSpec(4, image=ImageSpec(views, size, size))
    if precomputed is not None:
        from hpt_kit.models.stem_image import feature_spec, precomputed_stems

        obs = dataclasses.replace(obs, image_features=feature_spec(precomputed, views, size, size))
        stems = precomputed_stems(stems, obs.image_features.encoder)
    return EmbodimentData(
        name=name,
        observation=obs,
        action=ActionSpec(2, (-1.0, -1.0), (1.0, 1.0), 10.0),
        stems=stems,
        head=HeadSpec(hidden=(64,), action_horizon=3),
        observation_horizon=horizon,
    )


def image_stats():
    return {
        "state": {"mean": [0.0] * 4, "std": [1.0] * 4},
        "action": {"min": [-1.0, -1.0], "max": [1.0, 1.0]},
    }


@pytest.fixture
def one_thread():
    """Networks this small gain nothing from intra-op threads, and on a busy CPU the threads only wait."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
