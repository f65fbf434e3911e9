"""The three entry points of the robosuite embodiments, built on the kit's episode loops: dataset
conversion, rollout of a learned controller and rollout of the scripted expert.

Seeding is the kit's (``hpt_kit.rollout``): episode ``i`` of a call with seed ``s`` draws the robot's
initial joint noise and the object placement from ``SeedSequence(s, spawn_key=(stream, i))``, with
one stream for conversion and another for rollouts, so evaluating with a dataset's seed never replays
its episodes, and every episode is reproducible on its own whatever ran before it.

Building a robosuite environment takes one to three seconds, so each process keeps one per
(robot, task) and resets it softly between episodes and calls. The embodiments observe state only:
robosuite is built without its renderers, and rollout videos are drawn from the simulator's own
model and data by a ``mujoco.Renderer`` made on the first frame asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
from hpt_kit import Controller, ConvertRequest, RolloutRequest, RolloutResult, SpecError
from hpt_kit.rollout import EnvFactory, EpisodeSource, RolloutEnvs, collect_episodes, evaluate

from hpt_kit_robosuite.env import SuiteEnv, versions
from hpt_kit_robosuite.expert import PickExpert
from hpt_kit_robosuite.robots import CONTROL_HZ, Robot, Task, embodiment_name

_ENVS: dict[tuple[str, str], SuiteEnv] = {}
VIDEO_SIZE = 128
VIDEO_CAMERA = "frontview"


def environment(robot: Robot, task: Task) -> SuiteEnv:
    """The process's environment for this robot and task, built on first use."""
    key = (robot.key, task.robosuite_name)
    if key not in _ENVS:
        _ENVS[key] = SuiteEnv(robot, task)
    return _ENVS[key]


class _LoopEnv:
    """A ``SuiteEnv`` as the kit's episode loop drives it: the state alone."""

    def __init__(self, env: SuiteEnv):
        self.env, self.action_dim, self.max_steps = env, env.action_dim, env.task.max_steps
        self._renderer = None

    def reset(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"state": self.env.reset(rng)}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
        state, reward, success = self.env.step(action)
        return {"state": state}, reward, success

    def frame(self) -> np.ndarray:
        import mujoco

        sim = self.env.env.sim
        if self._renderer is None:
            self._renderer = mujoco.Renderer(sim.model._model, VIDEO_SIZE, VIDEO_SIZE)
        self._renderer.update_scene(sim.data._data, camera=VIDEO_CAMERA)
        return self._renderer.render()


def _check_render(robot: Robot, task: Task, render: bool) -> None:
    if render:
        name = embodiment_name(robot, task)
        raise SpecError(f"embodiment {name!r} observes state only; it has no camera images to render")


def convert_dataset(robot: Robot, task: Task, request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``request.episodes`` successful expert episodes; failures are dropped and re-drawn."""
    _check_render(robot, task, request.render)
    return _convert(robot, task, request)


def _convert(robot: Robot, task: Task, request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    env = environment(robot, task)
    request.notes.update(
        versions(), robot=robot.robosuite_name, task=task.robosuite_name, max_episode_steps=task.max_steps
    )
    source = EpisodeSource(_LoopEnv(env), PickExpert(env))
    yield from collect_episodes(embodiment_name(robot, task), request, [source])


def _evaluate(
    robot: Robot, task: Task, make_controller: Callable[[SuiteEnv], Controller], request: RolloutRequest
) -> RolloutResult:
    """Run ``request.episodes`` episodes with the controller ``make_controller(env)`` returns; videos
    (``request.video_dir``) show the ``frontview`` camera at the control rate."""
    _check_render(robot, task, request.render)
    env = environment(robot, task)
    source = EpisodeSource(_LoopEnv(env), make_controller(env))
    return evaluate(
        embodiment_name(robot, task), request, [source], video_fps=env.control_hz, details=_details(robot, task)
    )


def _details(robot: Robot, task: Task) -> dict:
    return {
        **versions(),
        "robot": robot.robosuite_name,
        "task": task.robosuite_name,
        "max_episode_steps": task.max_steps,
    }


def _loop_env(robot: Robot, task: Task) -> _LoopEnv:
    """The worker process's environment for this robot and task (``rollout_envs``)."""
    return _LoopEnv(environment(robot, task))


def rollout(robot: Robot, task: Task, controller: Controller, request: RolloutRequest) -> RolloutResult:
    return _evaluate(robot, task, lambda env: controller, request)


def expert_rollout(robot: Robot, task: Task, request: RolloutRequest) -> RolloutResult:
    return _evaluate(robot, task, PickExpert, request)


def rollout_envs(robot: Robot, task: Task, request: RolloutRequest) -> RolloutEnvs:
    """What ``rollout`` runs, as a factory each evaluation worker builds its own environment from
    (building one takes seconds, so this process builds none)."""
    _check_render(robot, task, request.render)
    factory = EnvFactory(partial(_loop_env, robot, task))
    return RolloutEnvs(
        embodiment_name(robot, task), (factory,), video_fps=float(CONTROL_HZ), details=_details(robot, task)
    )
