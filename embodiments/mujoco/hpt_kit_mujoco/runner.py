"""The three entry points of the arm embodiments, built on the kit's episode loops: dataset
conversion, rollout of a learned controller and rollout of the scripted expert.

What is the arms' own is here: the observation (state, and camera images for the image variants) and
the video camera. Seeding is the kit's (``hpt_kit.rollout``): episode ``i`` of a call with seed ``s``
draws its start pose and target from ``SeedSequence(s, spawn_key=(stream, i))``, with one stream for
conversion and another for rollouts, so the same seed never evaluates a policy on the episodes it was
trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import mujoco
import numpy as np
from hpt_kit import Controller, ConvertRequest, RolloutRequest, RolloutResult, SpecError
from hpt_kit.rollout import EnvFactory, EpisodeSource, RolloutEnvs, collect_episodes, evaluate

from hpt_kit_mujoco.expert import ReachExpert
from hpt_kit_mujoco.reach import ArmTask, ReachEnv

VIDEO_SIZE = 128
VIDEO_CAMERA = "front"


class _LoopEnv:
    """A ``ReachEnv`` as the kit's episode loop drives it: the state, plus the cameras if ``images``."""

    def __init__(self, env: ReachEnv, images: bool):
        self.env, self.images = env, images
        self.action_dim, self.max_steps = env.n, env.task.max_steps

    def reset(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self._observe(self.env.reset(rng))

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
        state, reward, success = self.env.step(action)
        return self._observe(state), reward, success

    def frame(self) -> np.ndarray:
        return self.env.render(VIDEO_CAMERA, VIDEO_SIZE)

    def close(self) -> None:
        self.env.close()

    def _observe(self, state: np.ndarray) -> dict[str, np.ndarray]:
        return {"state": state, "image": self.env.images()} if self.images else {"state": state}


def _loop_env(task: ArmTask, images: bool) -> _LoopEnv:
    """A fresh environment for one evaluation process (``rollout_envs``)."""
    return _LoopEnv(ReachEnv(task), images)


def _check_render(task: ArmTask, render: bool) -> None:
    if render and not task.views:
        hint = f"; use {task.image_variant!r} for camera images" if task.image_variant else ""
        raise SpecError(f"embodiment {task.name!r} observes state only{hint}")


def convert_dataset(task: ArmTask, request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``request.episodes`` successful expert episodes; failures are dropped and re-drawn.

    Image variants always render (their observation spec includes the image); state-only variants
    reject ``render=True``.
    """
    _check_render(task, request.render)
    return _convert(task, request)


def _convert(task: ArmTask, request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    env = ReachEnv(task)
    request.notes.update(mujoco_version=mujoco.__version__, success_threshold_m=task.success_threshold)
    try:
        source = EpisodeSource(_LoopEnv(env, images=bool(task.views)), ReachExpert(env))
        yield from collect_episodes(task.name, request, [source])
    finally:
        env.close()


def _evaluate(
    task: ArmTask, make_controller: Callable[[ReachEnv], Controller], request: RolloutRequest
) -> RolloutResult:
    """Run ``request.episodes`` episodes with the controller ``make_controller(env)`` returns."""
    _check_render(task, request.render)
    env = ReachEnv(task)
    try:
        source = EpisodeSource(_LoopEnv(env, images=request.render), make_controller(env))
        return evaluate(task.name, request, [source], video_fps=env.control_hz, details=_details(task))
    finally:
        env.close()


def _details(task: ArmTask) -> dict:
    return {"success_threshold_m": task.success_threshold, "max_episode_steps": task.max_steps}


def rollout(task: ArmTask, controller: Controller, request: RolloutRequest) -> RolloutResult:
    return _evaluate(task, lambda env: controller, request)


def expert_rollout(task: ArmTask, request: RolloutRequest) -> RolloutResult:
    return _evaluate(task, ReachExpert, request)


def rollout_envs(task: ArmTask, request: RolloutRequest) -> RolloutEnvs:
    """What ``rollout`` runs, as a factory each evaluation worker builds its own arm from."""
    _check_render(task, request.render)
    env = ReachEnv(task)  # only to read the control rate off the model
    try:
        video_fps = env.control_hz
    finally:
        env.close()
    factory = EnvFactory(partial(_loop_env, task, request.render))
    return RolloutEnvs(task.name, (factory,), video_fps=video_fps, details=_details(task))
