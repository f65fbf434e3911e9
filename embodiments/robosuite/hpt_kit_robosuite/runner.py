"""The episode loop, and the three entry points built on it: dataset conversion, rollout of a learned
controller and rollout of the scripted expert.

Seeding: episode ``i`` of a call with seed ``s`` draws the robot's initial joint noise and the object
placement from ``SeedSequence(s, spawn_key=(stream, i))``, with one stream for conversion and another
for rollouts, so evaluating with a dataset's seed never replays its episodes, and every episode is
reproducible on its own whatever ran before it.

Building a robosuite environment takes one to three seconds, so each process keeps one per
(robot, task) and resets it softly between episodes and calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from hpt_kit import Controller, ConvertRequest, RolloutRequest, RolloutResult, SpecError
from hpt_kit.rollout import EpisodeLog, checked_action, episode_rng

from hpt_kit_robosuite.env import SuiteEnv, versions
from hpt_kit_robosuite.expert import PickExpert
from hpt_kit_robosuite.robots import Robot, Task, embodiment_name

CONVERT_STREAM = 0
ROLLOUT_STREAM = 1

_ENVS: dict[tuple[str, str], SuiteEnv] = {}


def environment(robot: Robot, task: Task) -> SuiteEnv:
    """The process's environment for this robot and task, built on first use."""
    key = (robot.key, task.robosuite_name)
    if key not in _ENVS:
        _ENVS[key] = SuiteEnv(robot, task)
    return _ENVS[key]


def run_episode(env: SuiteEnv, controller: Controller, rng: np.random.Generator) -> EpisodeLog:
    """One episode, ended by the task's own success check or by ``max_steps``."""
    log = EpisodeLog()
    state = env.reset(rng)
    controller.reset()
    for _ in range(env.task.max_steps):
        action = checked_action(
            controller.act({"state": state}), env.action_dim, embodiment_name(env.robot, env.task)
        )
        log.states.append(state)
        log.actions.append(action)
        state, reward, log.success = env.step(action)
        log.episode_return += reward
        if log.success:
            break
    return log


def _check_request(robot: Robot, task: Task, render: bool, video_dir=None) -> None:
    name = embodiment_name(robot, task)
    if render:
        raise SpecError(f"embodiment {name!r} observes state only; it has no camera images to render")
    if video_dir is not None:
        raise SpecError(f"embodiment {name!r} does not record videos")


def convert_dataset(robot: Robot, task: Task, request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``request.episodes`` successful expert episodes; failures are dropped and re-drawn."""
    _check_request(robot, task, request.render)
    return _convert(robot, task, request)


def _convert(robot: Robot, task: Task, request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    env = environment(robot, task)
    expert = PickExpert(env)
    max_attempts = 2 * request.episodes + 20
    kept = attempts = 0
    notes = request.notes
    notes.update(
        versions(), robot=robot.robosuite_name, task=task.robosuite_name, max_episode_steps=task.max_steps
    )
    while kept < request.episodes:
        if attempts >= max_attempts:
            raise RuntimeError(
                f"{embodiment_name(robot, task)}: the expert failed {attempts - kept} of {attempts} episodes"
            )
        log = run_episode(env, expert, episode_rng(request.seed, CONVERT_STREAM, attempts))
        attempts += 1
        kept += log.success
        notes.update(
            episodes_attempted=attempts, episodes_dropped=attempts - kept, expert_success_rate=kept / attempts
        )
        if log.success:
            yield log.to_episode()


def evaluate(
    robot: Robot, task: Task, make_controller: Callable[[SuiteEnv], Controller], request: RolloutRequest
) -> RolloutResult:
    """Run ``request.episodes`` episodes with the controller ``make_controller(env)`` returns."""
    _check_request(robot, task, request.render, request.video_dir)
    env = environment(robot, task)
    controller = make_controller(env)
    successes, returns, lengths = [], [], []
    for i in range(request.episodes):
        log = run_episode(env, controller, episode_rng(request.seed, ROLLOUT_STREAM, i))
        successes.append(log.success)
        returns.append(log.episode_return)
        lengths.append(len(log.actions))
    details = {
        **versions(),
        "robot": robot.robosuite_name,
        "task": task.robosuite_name,
        "max_episode_steps": task.max_steps,
    }
    return RolloutResult.from_episodes(successes, returns, lengths, details=details)


def rollout(robot: Robot, task: Task, controller: Controller, request: RolloutRequest) -> RolloutResult:
    return evaluate(robot, task, lambda env: controller, request)


def expert_rollout(robot: Robot, task: Task, request: RolloutRequest) -> RolloutResult:
    return evaluate(robot, task, PickExpert, request)
