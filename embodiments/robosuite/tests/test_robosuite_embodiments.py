"""The robosuite embodiments against the kit's contract, plus the facts their README promises.

robosuite and mujoco are not imported here: under ``MUJOCO_GL=osmesa`` they must load after hpt_kit
(see ``hpt_kit/_preload.py``), so their versions come from the package metadata.

Building a robosuite environment takes seconds, so the tests lean on the runner's per-process cache:
each (robot, task) environment is built once and shared by every test that touches it.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
from hpt_kit import ConvertRequest, Embodiment, RolloutRequest, SpecError
from hpt_kit.contract import check_embodiment, registered_embodiments
from hpt_kit.rollout import CONVERT_STREAM, ROLLOUT_STREAM, episode_rng

from hpt_kit_robosuite import plugin, runner
from hpt_kit_robosuite.robots import LIFT, ROBOTS, TASKS, embodiment_name

NAMES = {embodiment_name(robot, task): (robot, task) for task in TASKS for robot in ROBOTS}
ROBOSUITE_VERSION = metadata.version("robosuite")


@pytest.fixture(scope="module")
def registered() -> dict[str, Embodiment]:
    return registered_embodiments(plugin, "robosuite")  # through the kit's own validating registrar


def test_the_hook_registers_every_robot_in_every_task(registered):
    assert set(registered) == set(NAMES)
    assert {"robosuite-panda", "robosuite-ur5e", "robosuite-jaco-stack"} <= set(registered)


def test_registration_does_not_import_robosuite():
    code = "import sys, hpt_kit_robosuite.plugin as p; p.embodiments(); print('robosuite' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_the_entry_point_names_the_plugin_module():
    try:
        dist = metadata.distribution("hpt-kit-robosuite")
    except metadata.PackageNotFoundError:
        pytest.skip("hpt-kit-robosuite is not installed")
    points = {ep.name: ep.value for ep in dist.entry_points if ep.group == "hpt_kit"}
    assert points == {"robosuite": "hpt_kit_robosuite.plugin"}


def split_state(
    state: np.ndarray, joints: int, gripper: int, objects: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """The README's layout, cut out of a (T, state_dim) array."""
    sizes = {"sin": joints, "cos": joints, "qvel": joints, "eef": 3, "eef_quat": 4, "gripper": gripper}
    for name in objects:
        sizes |= {name: 3, f"{name}_quat": 4, f"{name}_minus_eef": 3}
    assert sum(sizes.values()) == state.shape[1]
    out, start = {}, 0
    for key, size in sizes.items():
        out[key] = state[:, start : start + size]
        start += size
    return out


@pytest.mark.parametrize("name", sorted(NAMES))
def test_contract(registered, name):
    emb, (robot, task) = registered[name], NAMES[name]
    assert emb.action.dim == 7 and emb.action.control_hz == pytest.approx(20.0)
    assert emb.max_episode_steps == task.max_steps
    # One rollout: a random controller never succeeds, so it always runs to max_episode_steps.
    report = check_embodiment(emb, episodes=2, rollout_episodes=1)

    # The declared sizes are what robosuite really builds for this robot.
    env = runner.environment(robot, task)
    assert env.action_dim == emb.action.dim
    assert env.obs["robot0_joint_pos"].shape == (robot.joints,)
    assert env.obs["robot0_gripper_qpos"].shape == (robot.gripper_qpos,)
    assert env.control_hz == emb.action.control_hz

    for episode in report.episodes:
        assert episode["state"].shape[1] == emb.observation.state_dim
        assert 1 <= len(episode["state"]) <= emb.max_episode_steps
        assert np.abs(episode["action"]).max() <= 1.0
        parts = split_state(episode["state"], robot.joints, robot.gripper_qpos, task.objects)
        np.testing.assert_allclose(parts["sin"] ** 2 + parts["cos"] ** 2, 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(parts["eef_quat"], axis=1), 1.0, atol=1e-4)
        for obj in task.objects:
            np.testing.assert_allclose(parts[f"{obj}_minus_eef"], parts[obj] - parts["eef"], atol=1e-5)
            np.testing.assert_allclose(np.linalg.norm(parts[f"{obj}_quat"], axis=1), 1.0, atol=1e-4)
        picked = parts[task.pick][:, 2]
        assert env.table_height < picked[0] < env.table_height + 0.04  # on the table at the start
        # An episode ends at success: by its last recorded step the expert has the object up.
        assert picked[-1] > picked.min() + 0.005
    assert report.rollout.details["robosuite_version"] == ROBOSUITE_VERSION
    assert report.rollout.details["task"] == task.robosuite_name


@pytest.mark.parametrize("name", ["robosuite-panda", "robosuite-ur5e"])
def test_the_expert_lifts_the_cube(registered, name):
    result = registered[name].expert_rollout(RolloutRequest(episodes=3, seed=0))
    assert result.successes == (True, True, True), result
    assert max(result.episode_lengths) < LIFT.max_steps


def test_conversion_is_deterministic_and_records_notes(registered):
    emb = registered["robosuite-panda"]
    first, again = ConvertRequest(episodes=1, seed=7), ConvertRequest(episodes=1, seed=7)
    a, b = list(emb.convert_dataset(first)), list(emb.convert_dataset(again))
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() == {"state", "action"}
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    notes = first.notes
    assert notes["robosuite_version"] == ROBOSUITE_VERSION
    assert notes["mujoco_version"] == metadata.version("mujoco")
    assert (notes["robot"], notes["task"]) == ("Panda", "Lift")
    assert notes["episodes_dropped"] == notes["episodes_attempted"] - 1
    assert notes["expert_success_rate"] == 1 / notes["episodes_attempted"]


def test_each_episode_is_drawn_from_its_own_seed_and_stream():
    env = runner.environment(*NAMES["robosuite-panda"])
    convert = env.reset(episode_rng(3, CONVERT_STREAM, 0))
    env.reset(episode_rng(3, CONVERT_STREAM, 1))  # whatever ran before
    again = env.reset(episode_rng(3, CONVERT_STREAM, 0))
    evaluate = env.reset(episode_rng(3, ROLLOUT_STREAM, 0))
    np.testing.assert_array_equal(convert, again)
    assert not np.array_equal(convert, evaluate)


def test_state_only_requests_are_refused(registered):
    emb = registered["robosuite-panda"]
    with pytest.raises(SpecError, match="state only"):
        emb.convert_dataset(ConvertRequest(episodes=1, seed=0, render=True))


def test_a_wrongly_shaped_action_is_an_error(registered):
    class Wrong:
        def reset(self) -> None:
            pass

        def act(self, observation):
            return np.zeros(4, dtype=np.float32)

    with pytest.raises(ValueError, match=r"shape \(4,\), expected \(7,\)"):
        registered["robosuite-panda"].rollout(Wrong(), RolloutRequest(episodes=1, seed=0))


def test_expert_rollout_videos_are_mp4_of_the_front_camera(registered, tmp_path):
    from hpt_kit.video import read_frames

    result = registered["robosuite-panda"].expert_rollout(RolloutRequest(episodes=1, seed=0, video_dir=tmp_path))
    (video,) = result.videos
    outcome = "success" if result.successes[0] else "failure"
    assert video.endswith(f"robosuite-panda-episode000-{outcome}.mp4")
    frames = read_frames(video)
    assert frames.shape == (result.episode_lengths[0] + 1, 128, 128, 3)
    assert frames.std() > 5  # a picture, not a blank frame
