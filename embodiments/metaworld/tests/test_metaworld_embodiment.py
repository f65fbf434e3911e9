"""The Meta-World embodiments against the kit's contract, plus the facts their README promises."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest
from hpt_kit import ConvertRequest, Embodiment, LanguageSpec, RolloutRequest, SpecError
from hpt_kit.contract import check_embodiment, registered_embodiments

from hpt_kit_metaworld import plugin, runner
from hpt_kit_metaworld.tasks import (
    ALL_TASKS,
    CONTROL_HZ,
    INSTRUCTIONS,
    MAX_EPISODE_STEPS,
    MT10,
    SAWYER_OBS_DIM,
    TASKS_ENV,
)

QUICK = ("reach-v3", "push-v3", "drawer-close-v3")  # the experts finish these in under 100 steps


@pytest.fixture(scope="module")
def registered() -> dict[str, Embodiment]:
    return registered_embodiments(plugin, "metaworld")  # through the kit's own validating registrar


@pytest.fixture(autouse=True)
def all_tasks(monkeypatch):
    monkeypatch.delenv(TASKS_ENV, raising=False)


def test_the_hook_registers_every_embodiment(registered):
    singles = {f"metaworld-{task}" for task in ALL_TASKS}
    assert set(registered) == {"metaworld", "metaworld-rgb", "metaworld-lang", "metaworld-mt50", *singles}
    assert registered["metaworld"].observation.state_dim == SAWYER_OBS_DIM + 10 == 49
    assert registered["metaworld-lang"].observation.state_dim == SAWYER_OBS_DIM  # no one-hot
    assert registered["metaworld-lang"].observation.language == LanguageSpec(1, 384, "all-minilm-l6-v2")
    assert registered["metaworld-mt50"].observation.state_dim == SAWYER_OBS_DIM + 50
    assert registered["metaworld-reach-v3"].observation.state_dim == SAWYER_OBS_DIM
    for emb in registered.values():
        assert emb.action.dim == 4 and emb.action.low == (-1.0,) * 4 and emb.action.high == (1.0,) * 4
        assert emb.action.control_hz == 80.0 and emb.max_episode_steps == 500


def test_the_entry_point_names_the_plugin_module():
    try:
        dist = metadata.distribution("hpt-kit-metaworld")
    except metadata.PackageNotFoundError:
        pytest.skip("hpt-kit-metaworld is not installed")
    points = {ep.name: ep.value for ep in dist.entry_points if ep.group == "hpt_kit"}
    assert points == {"metaworld": "hpt_kit_metaworld.plugin"}


def test_registration_does_not_import_metaworld():
    code = "import sys; from hpt_kit_metaworld import plugin; plugin.embodiments(); print('metaworld' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_written_out_constants_match_the_installed_metaworld():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3
    from metaworld.policies import ENV_POLICY_MAP

    from hpt_kit_metaworld.sawyer import SawyerTask

    assert ALL_TASKS == tuple(ALL_V3_ENVIRONMENTS)
    assert MT10 == tuple(MT10_V3)
    assert set(ENV_POLICY_MAP) == set(ALL_TASKS)
    env = SawyerTask("reach-v3")
    try:
        obs = env.reset(np.random.default_rng(0))
        assert obs.shape == (SAWYER_OBS_DIM,)
        assert env.control_hz == pytest.approx(CONTROL_HZ)
        assert env.max_path_length == MAX_EPISODE_STEPS
    finally:
        env.close()


@pytest.mark.parametrize("name", ["metaworld", "metaworld-drawer-close-v3"])
def test_contract(registered, name):
    emb = registered[name]
    report = check_embodiment(emb)
    for episode in report.episodes:
        assert 1 <= len(episode["state"]) <= emb.max_episode_steps
        assert np.abs(episode["action"]).max() <= 1.0
        np.testing.assert_array_equal(episode["state"][1:, 18:36], episode["state"][:-1, :18])  # previous step
    assert report.controller_calls > 0
    assert report.rollout.details["metaworld_version"] == metadata.version("metaworld")


def test_experts_succeed_on_seeded_episodes(registered, monkeypatch):
    monkeypatch.setenv(TASKS_ENV, ",".join(QUICK))
    result = registered["metaworld"].expert_rollout(RolloutRequest(episodes=3 * len(QUICK), seed=0))
    assert all(result.successes), result
    assert result.details["per_task"] == dict.fromkeys(QUICK, 1.0)
    assert max(result.episode_lengths) < 150


def test_conversion_deals_tasks_in_turn_and_tags_them(registered, monkeypatch):
    monkeypatch.setenv(TASKS_ENV, "drawer-close-v3, reach-v3")  # order does not matter
    emb = registered["metaworld"]
    request = ConvertRequest(episodes=3, seed=5)
    episodes = list(emb.convert_dataset(request))
    again = list(emb.convert_dataset(ConvertRequest(episodes=3, seed=5)))
    order = ["reach-v3", "drawer-close-v3", "reach-v3"]  # MT10 order, round robin
    for episode, task in zip(episodes, order, strict=True):
        code = episode["state"][:, SAWYER_OBS_DIM:]
        assert code.shape[1] == 10 and (code == np.eye(10)[MT10.index(task)]).all()
    assert not np.array_equal(episodes[0]["state"][0], episodes[2]["state"][0])  # new draw, same task
    for a, b in zip(episodes, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    notes = request.notes
    assert notes["tasks"] == ["reach-v3", "drawer-close-v3"]
    assert notes["metaworld_version"] == metadata.version("metaworld")
    assert notes["mujoco_version"] == metadata.version("mujoco")
    assert notes["per_task"]["reach-v3"]["episodes"] == 2
    assert notes["per_task"]["drawer-close-v3"]["episodes"] == 1


def test_the_language_variant_names_each_task_in_words(registered, monkeypatch):
    """``metaworld-lang``: the converter yields each episode's instruction (the kit encodes it) and the
    runner passes it in every observation; the state carries no one-hot."""
    assert set(INSTRUCTIONS) == set(MT10) and len(set(INSTRUCTIONS.values())) == len(MT10)
    monkeypatch.setenv(TASKS_ENV, "reach-v3,drawer-close-v3")
    emb = registered["metaworld-lang"]
    episodes = list(emb.convert_dataset(ConvertRequest(episodes=2, seed=0)))
    assert [e["instruction"] for e in episodes] == [INSTRUCTIONS["reach-v3"], INSTRUCTIONS["drawer-close-v3"]]
    assert INSTRUCTIONS["drawer-close-v3"] == "close the drawer"
    assert all(e["state"].shape[1] == SAWYER_OBS_DIM and "language" not in e for e in episodes)

    class Recorder(runner.ScriptedExpert):
        """The reach expert (it ends the episode early), noting what each observation carries."""

        seen = set()

        def act(self, observation):
            self.seen.add((observation["instruction"], observation["state"].shape))
            return super().act(observation)

    result = emb.rollout(Recorder("reach-v3"), RolloutRequest(episodes=1, seed=0))  # reach-v3 comes first
    assert result.successes == (True,)
    assert Recorder.seen == {("reach the goal position with the gripper", (SAWYER_OBS_DIM,))}


def test_failed_expert_episodes_are_dropped_and_counted(registered, monkeypatch):
    class FailsFirst(runner.ScriptedExpert):
        """Holds still through its first episode (the hand never reaches the goal), then helps."""

        episodes = 0

        def reset(self) -> None:
            FailsFirst.episodes += 1

        def act(self, observation):
            return np.zeros(4, np.float32) if FailsFirst.episodes == 1 else super().act(observation)

    monkeypatch.setattr(runner, "ScriptedExpert", FailsFirst)
    request = ConvertRequest(episodes=1, seed=0)
    episodes = list(registered["metaworld-reach-v3"].convert_dataset(request))
    assert len(episodes) == 1 and len(episodes[0]["state"]) < MAX_EPISODE_STEPS
    notes = request.notes
    assert notes["episodes_attempted"] == 2 and notes["episodes_dropped"] == 1
    assert notes["expert_success_rate"] == 0.5
    assert notes["per_task"] == {
        "reach-v3": {"episodes": 1, "episodes_attempted": 2, "episodes_dropped": 1, "expert_success_rate": 0.5}
    }
    assert episodes[0]["state"].shape[1] == SAWYER_OBS_DIM  # single task: no one-hot


def test_rollout_draws_other_episodes_than_conversion(registered):
    emb = registered["metaworld-reach-v3"]
    converted = next(iter(emb.convert_dataset(ConvertRequest(episodes=1, seed=0))))

    class Recorder:
        first = None

        def reset(self) -> None:
            pass

        def act(self, observation):
            if self.first is None:
                self.first = observation["state"].copy()
            return np.zeros(4, dtype=np.float32)

    recorder = Recorder()
    result = emb.rollout(recorder, RolloutRequest(episodes=1, seed=0))
    assert result.successes == (False,) and result.episode_lengths == (MAX_EPISODE_STEPS,)
    assert not np.array_equal(recorder.first[-3:], converted["state"][0, -3:])  # another goal


def test_task_selection_errors_name_the_known_tasks(registered, monkeypatch):
    monkeypatch.setenv(TASKS_ENV, "reach-v3,fly-v3")
    with pytest.raises(SpecError, match=r"\['fly-v3'\].*door-open-v3"):
        registered["metaworld"].convert_dataset(ConvertRequest(episodes=1, seed=0))


def test_state_only_variants_reject_render(registered):
    with pytest.raises(SpecError, match="metaworld-rgb"):
        registered["metaworld"].convert_dataset(ConvertRequest(episodes=1, seed=0, render=True))


def test_a_wrongly_shaped_action_is_an_error(registered):
    class Wrong:
        def reset(self) -> None:
            pass

        def act(self, observation):
            return np.zeros(3, dtype=np.float32)

    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(4,\)"):
        registered["metaworld-reach-v3"].rollout(Wrong(), RolloutRequest(episodes=1, seed=0))


RENDER_SCRIPT = textwrap.dedent(
    """
    import tempfile
    from pathlib import Path

    import numpy as np
    from hpt_kit import RolloutRequest
    from hpt_kit.contract import check_embodiment, registered_embodiments
    from hpt_kit_metaworld.plugin import METAWORLD, METAWORLD_RGB, make_embodiment

    emb = make_embodiment(METAWORLD_RGB)
    episode = check_embodiment(emb, episodes=1, rollout_episodes=1).episodes[0]
    assert episode["image"].shape == (len(episode["state"]), 1, 64, 64, 3)
    assert episode["image"].dtype == np.uint8 and episode["image"].std() > 5  # a picture, not a blank
    with tempfile.TemporaryDirectory() as tmp:
        expert = make_embodiment(METAWORLD).expert_rollout(RolloutRequest(episodes=1, seed=0, video_dir=Path(tmp)))
        from hpt_kit.video import read_frames

        frames = read_frames(expert.videos[0])  # mp4, decoded back
        assert frames.shape[1:] == (128, 128, 3) and len(frames) == expert.episode_lengths[0] + 1
    print("rendered ok")
    """
)


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is None, reason="libosmesa6 is not installed")
def test_rgb_variant_renders_with_osmesa():
    # MuJoCo picks its GL backend when first imported, so rendering runs in a fresh interpreter.
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa", TASKS_ENV: "reach-v3"}
    proc = subprocess.run(
        [sys.executable, "-c", RENDER_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "rendered ok" in proc.stdout
