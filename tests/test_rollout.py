"""The shared episode loops, on a point on a line that an expert steers to a target.

The point starts at 0 and moves at most ``SPEED`` a step, and the target is drawn from [-1, 1], so
within ``MAX_STEPS`` the expert reaches only the nearer targets: some expert episodes fail, which
exercises the retries. The simulators' own loops are covered by the plugins' test suites.
"""

from __future__ import annotations

import numpy as np
import pytest

from hpt_kit import ConvertRequest, RolloutRequest, SpecError
from hpt_kit.rollout import (
    CONVERT_STREAM,
    ROLLOUT_STREAM,
    SPARE_ATTEMPTS,
    EpisodeLog,
    EpisodeSource,
    collect_episodes,
    episode_rng,
    evaluate,
    run_episode,
    save_video,
)
from hpt_kit.video import read_frames

SPEED, MAX_STEPS, REACHED = 0.1, 6, 0.05


class PointEnv:
    """The ``EpisodeEnv`` of the tests: state (position, target), reward minus the distance."""

    action_dim, max_steps = 1, MAX_STEPS

    def __init__(self, images: bool = False):
        self.images, self.frames_rendered = images, 0

    def reset(self, rng):
        self.position, self.target = 0.0, float(rng.uniform(-1.0, 1.0))
        return self.observe()

    def step(self, action):
        self.position += SPEED * float(action[0])
        distance = abs(self.target - self.position)
        return self.observe(), -distance, distance < REACHED

    def observe(self):
        observation = {"state": np.array([self.position, self.target], np.float32)}
        if self.images:
            observation["image"] = np.full((1, 2, 2, 3), int(100 * (1 + self.position)), np.uint8)
        return observation

    def frame(self):
        self.frames_rendered += 1
        return np.full((4, 4, 3), int(100 * (1 + self.position)), np.uint8)


class Expert:
    def __init__(self):
        self.resets = self.calls = 0

    def reset(self):
        self.resets += 1

    def act(self, observation):
        self.calls += 1
        position, target = observation["state"]
        return np.clip([(target - position) / SPEED], -1.0, 1.0)


class Still:
    def reset(self):
        pass

    def act(self, observation):
        return np.zeros(1)


def reached(target: float) -> bool:
    """Whether the expert gets to ``target`` in time, worked out from the dynamics, not the loop."""
    return abs(target) < SPEED * MAX_STEPS + REACHED


def target_of(seed: int, *key: int) -> float:
    return float(episode_rng(seed, *key).uniform(-1.0, 1.0))


def test_run_episode_records_the_controller_until_success():
    env, expert = PointEnv(images=True), Expert()
    key = next(j for j in range(100) if reached(target_of(0, j)) and abs(target_of(0, j)) > 0.3)  # 4+ steps
    log = run_episode("point", env, expert, episode_rng(0, key), video=True)
    assert log.success and expert.resets == 1
    steps = len(log.actions)
    assert 1 < steps < MAX_STEPS and expert.calls == steps
    assert len(log.states) == len(log.images) == steps and len(log.frames) == steps + 1  # and the end
    positions = [s[0] for s in log.states]
    assert positions[0] == 0.0 and positions == sorted(positions, key=abs)  # heading out to the target
    target = log.states[0][1]
    final = positions[-1] + SPEED * log.actions[-1][0]
    assert abs(target - final) < REACHED
    expected_return = -sum(abs(target - (p + SPEED * a[0])) for p, a in zip(positions, log.actions))
    assert log.episode_return == pytest.approx(expected_return, rel=1e-5)
    episode = log.to_episode()
    assert episode["state"].shape == (steps, 2) and episode["action"].shape == (steps, 1)
    assert episode["image"].shape == (steps, 1, 2, 2, 3)


def test_run_episode_ends_at_max_steps_and_renders_only_for_video():
    env = PointEnv()
    log = run_episode("point", env, Still(), episode_rng(0, 0))
    assert not log.success and len(log.actions) == MAX_STEPS
    assert env.frames_rendered == 0 and log.frames == [] and "image" not in log.to_episode()


@pytest.mark.parametrize("action", [np.zeros(2), np.array([np.nan])])
def test_a_bad_action_is_an_error_naming_the_embodiment(action):
    class Bad(Still):
        def act(self, observation):
            return action

    with pytest.raises(ValueError, match="^point: controller returned"):
        run_episode("point", PointEnv(), Bad(), episode_rng(0, 0))


def test_actions_are_clipped_to_the_unit_box():
    class Shove(Still):
        def act(self, observation):
            return np.array([5.0])

    log = run_episode("point", PointEnv(), Shove(), episode_rng(0, 0))
    assert all(a[0] == 1.0 for a in log.actions)


def test_an_env_with_its_own_bounds_gets_actions_clipped_to_them():
    class Shove(Still):
        def act(self, observation):
            return np.array([5.0 if observation["state"][0] == 0.0 else -5.0])

    class WideEnv(PointEnv):
        action_low, action_high = (-2.0,), (3.0,)

    log = run_episode("point", WideEnv(), Shove(), episode_rng(0, 0))
    assert log.actions[0][0] == 3.0 and all(a[0] == -2.0 for a in log.actions[1:])


def test_collection_drops_failed_expert_episodes_and_redraws():
    request = ConvertRequest(episodes=4, seed=3)
    episodes = list(collect_episodes("point", request, [EpisodeSource(PointEnv(), Expert())]))

    targets = [t for k in range(4) for t in attempted_targets(3, k)]
    assert len(targets) == request.notes["episodes_attempted"]
    kept = [t for t in targets if reached(t)]
    assert len(kept) == 4 and reached(targets[-1])  # it stopped at the fourth success
    assert 0 < request.notes["episodes_dropped"] == len(targets) - 4  # the seed was picked for drops
    assert [e["state"][0, 1] for e in episodes] == pytest.approx(kept)
    assert request.notes == {
        "episodes_attempted": len(targets),
        "episodes_dropped": len(targets) - 4,
        "expert_success_rate": 4 / len(targets),
    }
    again = list(
        collect_episodes("point", ConvertRequest(episodes=4, seed=3), [EpisodeSource(PointEnv(), Expert())])
    )
    for a, b in zip(episodes, again, strict=True):
        assert a.keys() == b.keys() == {"state", "action"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def attempted_targets(seed, j, *key):
    """The targets the expert met on episode ``j`` of a source: its first draw, then its retries'."""
    targets = [target_of(seed, CONVERT_STREAM, *key, j)]
    while not reached(targets[-1]):
        targets.append(target_of(seed, CONVERT_STREAM, *key, j, len(targets)))
    return targets


def test_a_range_of_episodes_is_the_same_episodes_as_in_the_whole_run():
    whole = list(collect_episodes("point", ConvertRequest(episodes=6, seed=3), [EpisodeSource(PointEnv(), Expert())]))
    request = ConvertRequest(episodes=3, seed=3, first=2)
    part = list(collect_episodes("point", request, [EpisodeSource(PointEnv(), Expert())]))
    assert len(part) == 3 and request.notes["first_episode"] == 2
    for a, b in zip(whole[2:5], part, strict=True):
        np.testing.assert_array_equal(a["state"], b["state"])
        np.testing.assert_array_equal(a["action"], b["action"])
    assert request.notes["episodes_attempted"] == sum(len(attempted_targets(3, k)) for k in range(2, 5))


def test_collection_notes_are_current_after_every_episode():
    request = ConvertRequest(episodes=3, seed=3)
    stream = collect_episodes("point", request, [EpisodeSource(PointEnv(), Expert())])
    next(stream)
    first = dict(request.notes)
    list(stream)
    assert first["episodes_attempted"] - first["episodes_dropped"] == 1
    assert request.notes["episodes_attempted"] - request.notes["episodes_dropped"] == 3


def test_collection_gives_up_on_a_failing_expert():
    request = ConvertRequest(episodes=2, seed=0)
    with pytest.raises(
        RuntimeError, match=f"^point: the expert failed {4 + SPARE_ATTEMPTS} of {4 + SPARE_ATTEMPTS}"
    ):
        list(collect_episodes("point", request, [EpisodeSource(PointEnv(), Still())]))
    assert request.notes["episodes_attempted"] == 4 + SPARE_ATTEMPTS


def test_collection_deals_named_sources_in_turn_and_reports_each():
    def source(name, key):
        return EpisodeSource(
            PointEnv(), Expert(), name=name, key=(key,), fields={"instruction": f"go {name}"}
        )

    request = ConvertRequest(episodes=3, seed=5)
    episodes = list(collect_episodes("points", request, [source("a", 7), source("b", 9), source("c", 11)]))
    assert [e["instruction"] for e in episodes] == ["go a", "go b", "go c"]
    for episode, key in zip(episodes, (7, 9, 11), strict=True):
        assert episode["state"][0, 1] == pytest.approx(attempted_targets(5, 0, key)[-1])

    request = ConvertRequest(episodes=1, seed=5)
    list(collect_episodes("points", request, [source("a", 7), source("b", 9)]))
    assert request.notes["per_task"]["b"] == {
        "episodes": 0,
        "episodes_attempted": 0,
        "episodes_dropped": 0,
        "expert_success_rate": None,
    }
    a = request.notes["per_task"]["a"]
    assert a["episodes"] == 1 and a["episodes_attempted"] == request.notes["episodes_attempted"]


def test_evaluation_counts_successes_on_other_draws_than_conversion():
    result = evaluate("point", RolloutRequest(episodes=6, seed=3), [EpisodeSource(PointEnv(), Expert())])
    targets = [target_of(3, ROLLOUT_STREAM, i) for i in range(6)]
    assert result.successes == tuple(reached(t) for t in targets)
    assert result.success_rate == pytest.approx(np.mean([reached(t) for t in targets]))
    assert len(result.returns) == 6 and all(r < 0 for r in result.returns)
    for steps, success in zip(result.episode_lengths, result.successes, strict=True):
        assert steps <= MAX_STEPS if success else steps == MAX_STEPS
    assert result.videos == () and result.details == {}
    assert not set(targets) & {target_of(3, CONVERT_STREAM, i) for i in range(6)}


def test_evaluation_reports_named_sources_and_the_plugins_details():
    sources = [
        EpisodeSource(PointEnv(), Expert(), name="near", key=(0,)),
        EpisodeSource(PointEnv(), Still(), name="idle", key=(1,)),
    ]
    result = evaluate("points", RolloutRequest(episodes=4, seed=0), sources, details={"max_episode_steps": 6})
    near = [reached(target_of(0, ROLLOUT_STREAM, 0, j)) for j in range(2)]
    assert result.successes == (near[0], False, near[1], False)
    assert result.details == {"per_task": {"near": np.mean(near), "idle": 0.0}, "max_episode_steps": 6}


def test_evaluation_writes_one_video_per_episode(tmp_path):
    sources = [EpisodeSource(PointEnv(), Expert(), name="a"), EpisodeSource(PointEnv(), Still(), name="b")]
    request = RolloutRequest(episodes=3, seed=0, video_dir=tmp_path, video_format="npz")
    result = evaluate("points", request, sources, video_fps=20.0)
    outcome = ["success" if s else "failure" for s in result.successes]
    assert outcome[1] == "failure"  # the idle source never reaches its target
    names = [f"points-a-episode000-{outcome[0]}.npz", "points-b-episode001-failure.npz", f"points-a-episode002-{outcome[2]}.npz"]
    assert result.videos == tuple(str(tmp_path / n) for n in names)
    for path, steps, success in zip(result.videos, result.episode_lengths, result.successes, strict=True):
        video = np.load(path)
        assert video["frames"].shape == (steps + 1, 4, 4, 3) and video["frames"].dtype == np.uint8
        assert video["fps"] == 20.0 and video["success"] == success

    only = [EpisodeSource(PointEnv(), Still())]  # a plugin's only source: no task in the name; mp4 by default
    single = evaluate("point", RolloutRequest(episodes=1, seed=0, video_dir=tmp_path / "one"), only, 5.0)
    assert single.videos == (str(tmp_path / "one" / "point-episode000-failure.mp4"),)
    assert read_frames(single.videos[0]).shape == (single.episode_lengths[0] + 1, 4, 4, 3)
    with pytest.raises(SpecError, match="unknown video format 'gif'"):
        evaluate("point", RolloutRequest(episodes=1, seed=0, video_dir=tmp_path, video_format="gif"), only, 5.0)


def test_an_embodiment_without_video_fps_refuses_videos_before_running(tmp_path):
    env, expert = PointEnv(), Expert()
    with pytest.raises(SpecError, match="'point' does not record videos"):
        evaluate(
            "point", RolloutRequest(episodes=1, seed=0, video_dir=tmp_path), [EpisodeSource(env, expert)]
        )
    assert expert.resets == 0 and list(tmp_path.iterdir()) == []


def test_save_video_makes_its_folder(tmp_path):
    log = EpisodeLog(frames=[np.zeros((2, 2, 3), np.uint8)] * 3, success=True)
    path = save_video(tmp_path / "deep" / "v.npz", log, 10.0)
    video = np.load(path)
    assert video["frames"].shape == (3, 2, 2, 3) and video["fps"] == 10.0 and bool(video["success"])
