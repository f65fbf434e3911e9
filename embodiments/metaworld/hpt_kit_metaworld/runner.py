"""The three entry points of the Meta-World embodiments, built on the kit's episode loops: dataset
conversion, rollout of a learned controller and rollout of the scripted experts.

What is Meta-World's own is here: one episode source per selected task, each with its environment
(built on first use), its observation (the 39-d observation plus the task code, the task in words for
the language variant, camera images for the image variant) and its seed key.

The kit's loops deal episodes over the sources in turn: episode ``k`` runs task ``k mod n``, so a call
for ``n x m`` episodes gives every task ``m`` and the first episodes of a dataset cover all tasks.

Seeding: attempt ``j`` at a task whose position in Meta-World's list of all v3 tasks is ``t`` draws
its object and goal positions from ``SeedSequence(seed, spawn_key=(stream, t, j))``, with one stream
for conversion and another for rollouts. An episode is thus reproducible on its own, is the same
whichever embodiment or task subset runs it, and evaluation never replays training episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from importlib import metadata

import numpy as np
from hpt_kit import INSTRUCTION, Controller, ConvertRequest, RolloutRequest, RolloutResult, SpecError
from hpt_kit.rollout import EnvFactory, EpisodeSource, RolloutEnvs, collect_episodes, evaluate

from hpt_kit_metaworld.expert import ScriptedExpert
from hpt_kit_metaworld.sawyer import SawyerTask
from hpt_kit_metaworld.tasks import ALL_TASKS, CONTROL_HZ, MAX_EPISODE_STEPS, TaskSet

ACTION_DIM = 4
VIDEO_SIZE = 128
VIDEO_CAMERA = "corner"


def versions() -> dict[str, str]:
    import mujoco

    return {"metaworld_version": metadata.version("metaworld"), "mujoco_version": mujoco.__version__}


class _LoopEnv:
    """One task's Sawyer environment as the kit's episode loop drives it, built on first use."""

    action_dim, max_steps = ACTION_DIM, MAX_EPISODE_STEPS

    def __init__(self, taskset: TaskSet, task: str, images: bool):
        self.task = task
        self._code = np.asarray(taskset.one_hot(task), dtype=np.float32)
        self._instruction = taskset.instruction(task)
        self._views = taskset.views if images else ()
        self._image_size = taskset.image_size
        self._env: SawyerTask | None = None

    @property
    def env(self) -> SawyerTask:
        if self._env is None:
            self._env = SawyerTask(self.task)
        return self._env

    def reset(self, rng: np.random.Generator) -> dict:
        return self._observe(self.env.reset(rng))

    def step(self, action: np.ndarray) -> tuple[dict, float, bool]:
        obs, reward, success = self.env.step(action)
        return self._observe(obs), reward, success

    def frame(self) -> np.ndarray:
        return self.env.render(VIDEO_CAMERA, VIDEO_SIZE)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def _observe(self, obs: np.ndarray) -> dict:
        observation = {"state": np.concatenate([obs.astype(np.float32), self._code])}
        if self._instruction is not None:
            observation[INSTRUCTION] = self._instruction
        if self._views:
            observation["image"] = np.stack([self.env.render(v, self._image_size) for v in self._views])
        return observation


def _sources(
    taskset: TaskSet, tasks: Sequence[str], controller_for: Callable[[str], Controller], images: bool
) -> list[EpisodeSource]:
    """One source per task; a converted episode carries its task in words when the kit encodes it."""
    return [
        EpisodeSource(
            _LoopEnv(taskset, task, images),
            controller_for(task),
            name=task,
            key=(ALL_TASKS.index(task),),
            fields={} if taskset.language is None else {INSTRUCTION: taskset.instruction(task)},
        )
        for task in tasks
    ]


def _close(sources: list[EpisodeSource]) -> None:
    for source in sources:
        source.env.close()


def _check_render(taskset: TaskSet, render: bool) -> None:
    if render and not taskset.views:
        hint = f"; use {taskset.image_variant!r} for camera images" if taskset.image_variant else ""
        raise SpecError(f"embodiment {taskset.name!r} observes state only{hint}")


def convert_dataset(taskset: TaskSet, request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``request.episodes`` successful expert episodes dealt over the selected tasks; failed
    attempts are dropped and retried with the task's next seed.

    Image variants always render (their observation spec includes the image); state-only variants
    reject ``render=True``.
    """
    _check_render(taskset, request.render)
    tasks = taskset.selected()  # read now, so a bad HPT_METAWORLD_TASKS fails before any work
    return _convert(taskset, tasks, request)


def _convert(
    taskset: TaskSet, tasks: tuple[str, ...], request: ConvertRequest
) -> Iterator[dict[str, np.ndarray]]:
    request.notes.update(versions(), tasks=list(tasks), max_episode_steps=MAX_EPISODE_STEPS)
    sources = _sources(taskset, tasks, ScriptedExpert, images=bool(taskset.views))
    try:
        yield from collect_episodes(taskset.name, request, sources)
    finally:
        _close(sources)


def _evaluate(
    taskset: TaskSet, make_controller: Callable[[str], Controller], request: RolloutRequest
) -> RolloutResult:
    """Run ``request.episodes`` episodes in total, dealt over the selected tasks, each task with the
    controller ``make_controller(task)`` returns."""
    _check_render(taskset, request.render)
    tasks = taskset.selected()
    sources = _sources(taskset, tasks, make_controller, images=request.render)
    try:
        return evaluate(taskset.name, request, sources, video_fps=CONTROL_HZ, details=_details(tasks))
    finally:
        _close(sources)


def _details(tasks: Sequence[str]) -> dict:
    return {"tasks": list(tasks), "max_episode_steps": MAX_EPISODE_STEPS, **versions()}


def rollout(taskset: TaskSet, controller: Controller, request: RolloutRequest) -> RolloutResult:
    return _evaluate(taskset, lambda task: controller, request)


def expert_rollout(taskset: TaskSet, request: RolloutRequest) -> RolloutResult:
    return _evaluate(taskset, ScriptedExpert, request)


def rollout_envs(taskset: TaskSet, request: RolloutRequest) -> RolloutEnvs:
    """What ``rollout`` runs, as one factory per selected task (the same order, names and seed keys
    as its sources); each evaluation worker builds a task's environment when first dealt one."""
    _check_render(taskset, request.render)
    tasks = taskset.selected()
    factories = tuple(
        EnvFactory(partial(_LoopEnv, taskset, task, request.render), name=task, key=(ALL_TASKS.index(task),))
        for task in tasks
    )
    return RolloutEnvs(taskset.name, factories, video_fps=CONTROL_HZ, details=_details(tasks))
