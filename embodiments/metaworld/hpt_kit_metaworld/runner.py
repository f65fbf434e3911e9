"""The episode loop, and the three entry points built on it: dataset conversion, rollout of a learned
controller and rollout of the scripted experts.

Episodes are dealt over the selected tasks in turn: episode ``k`` runs task ``k mod n``, so a call
for ``n x m`` episodes gives every task ``m`` and the first episodes of a dataset cover all tasks.

Seeding: attempt ``j`` at a task whose position in Meta-World's list of all v3 tasks is ``t`` draws
its object and goal positions from ``SeedSequence(seed, spawn_key=(stream, t, j))``, with one stream
for conversion and another for rollouts. An episode is thus reproducible on its own, is the same
whichever embodiment or task subset runs it, and evaluation never replays training episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
from hpt_kit import Controller, ConvertRequest, RolloutRequest, RolloutResult, SpecError
from hpt_kit.embodiment import INSTRUCTION
from hpt_kit.rollout import EpisodeLog, checked_action
from hpt_kit.rollout import episode_rng as shared_episode_rng

from hpt_kit_metaworld.expert import ScriptedExpert
from hpt_kit_metaworld.sawyer import SawyerTask
from hpt_kit_metaworld.tasks import ALL_TASKS, CONTROL_HZ, MAX_EPISODE_STEPS, TaskSet, round_robin

CONVERT_STREAM = 0
ROLLOUT_STREAM = 1
ACTION_DIM = 4
VIDEO_SIZE = 128
VIDEO_CAMERA = "corner"


def episode_rng(seed: int, stream: int, task: str, index: int) -> np.random.Generator:
    return shared_episode_rng(seed, stream, ALL_TASKS.index(task), index)


def versions() -> dict[str, str]:
    import mujoco

    return {"metaworld_version": metadata.version("metaworld"), "mujoco_version": mujoco.__version__}


def run_episode(
    taskset: TaskSet,
    env: SawyerTask,
    controller: Controller,
    rng: np.random.Generator,
    images: bool = False,
    video: bool = False,
) -> EpisodeLog:
    """One episode, ended by success or by ``MAX_EPISODE_STEPS``; records what the controller saw and did."""
    log = EpisodeLog()
    code = np.asarray(taskset.one_hot(env.task), dtype=np.float32)
    instruction = taskset.instruction(env.task)
    obs = env.reset(rng)
    controller.reset()
    for _ in range(MAX_EPISODE_STEPS):
        state = np.concatenate([obs.astype(np.float32), code])
        observation = {"state": state}
        if instruction is not None:
            observation[INSTRUCTION] = instruction
        if images:
            observation["image"] = np.stack([env.render(v, taskset.image_size) for v in taskset.views])
            log.images.append(observation["image"])
        if video:
            log.frames.append(env.render(VIDEO_CAMERA, VIDEO_SIZE))
        action = checked_action(controller.act(observation), ACTION_DIM, taskset.name)
        log.states.append(state)
        log.actions.append(action)
        obs, reward, log.success = env.step(action)
        log.episode_return += reward
        if log.success:
            break
    if video:
        log.frames.append(env.render(VIDEO_CAMERA, VIDEO_SIZE))
    return log


def _check_render(taskset: TaskSet, render: bool) -> None:
    if render and not taskset.views:
        hint = f"; use {taskset.image_variant!r} for camera images" if taskset.image_variant else ""
        raise SpecError(f"embodiment {taskset.name!r} observes state only{hint}")


class _Envs:
    """One environment per task, built on first use and closed together."""

    def __init__(self) -> None:
        self._envs: dict[str, SawyerTask] = {}

    def __getitem__(self, task: str) -> SawyerTask:
        if task not in self._envs:
            self._envs[task] = SawyerTask(task)
        return self._envs[task]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


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
    plan = round_robin(tasks, request.episodes)
    share = {t: sum(task == t for task, _ in plan) for t in tasks}
    max_attempts = {t: 2 * n + 20 for t, n in share.items()}
    attempts = dict.fromkeys(tasks, 0)
    kept = dict.fromkeys(tasks, 0)
    notes = request.notes
    notes.update(versions(), tasks=list(tasks), max_episode_steps=MAX_EPISODE_STEPS)
    envs = _Envs()
    experts = {t: ScriptedExpert(t) for t in share if share[t]}
    try:
        for task, _ in plan:
            env, expert = envs[task], experts[task]
            while True:
                if attempts[task] >= max_attempts[task]:
                    raise RuntimeError(
                        f"{taskset.name}: the {task} expert failed {attempts[task] - kept[task]} "
                        f"of {attempts[task]} episodes"
                    )
                rng = episode_rng(request.seed, CONVERT_STREAM, task, attempts[task])
                log = run_episode(taskset, env, expert, rng, images=bool(taskset.views))
                attempts[task] += 1
                kept[task] += log.success
                _record(notes, tasks, kept, attempts)
                if log.success:
                    episode = log.to_episode()
                    if taskset.language is not None:
                        episode[INSTRUCTION] = taskset.instruction(task)  # the kit encodes it
                    yield episode
                    break
    finally:
        envs.close()


def _record(notes: dict, tasks: tuple[str, ...], kept: dict[str, int], attempts: dict[str, int]) -> None:
    total_kept, total = sum(kept.values()), sum(attempts.values())
    notes.update(
        episodes_attempted=total,
        episodes_dropped=total - total_kept,
        expert_success_rate=total_kept / total,
        per_task={
            t: {
                "episodes": kept[t],
                "episodes_attempted": attempts[t],
                "episodes_dropped": attempts[t] - kept[t],
                "expert_success_rate": kept[t] / attempts[t] if attempts[t] else None,
            }
            for t in tasks
        },
    )


def evaluate(
    taskset: TaskSet, make_controller: Callable[[str], Controller], request: RolloutRequest
) -> RolloutResult:
    """Run ``request.episodes`` episodes in total, dealt over the selected tasks, each with the
    controller ``make_controller(task)`` returns."""
    _check_render(taskset, request.render)
    tasks = taskset.selected()
    envs = _Envs()
    successes, returns, lengths, videos = [], [], [], []
    per_task: dict[str, list[bool]] = {}
    try:
        for k, (task, j) in enumerate(round_robin(tasks, request.episodes)):
            record = request.video_dir is not None
            rng = episode_rng(request.seed, ROLLOUT_STREAM, task, j)
            log = run_episode(
                taskset, envs[task], make_controller(task), rng, images=request.render, video=record
            )
            successes.append(log.success)
            returns.append(log.episode_return)
            lengths.append(len(log.actions))
            per_task.setdefault(task, []).append(log.success)
            if record:
                videos.append(str(_save_video(Path(request.video_dir), taskset.name, task, k, log)))
    finally:
        envs.close()
    details = {
        "per_task": {t: float(np.mean(s)) for t, s in per_task.items()},
        "tasks": list(tasks),
        "max_episode_steps": MAX_EPISODE_STEPS,
        **versions(),
    }
    return RolloutResult.from_episodes(successes, returns, lengths, videos, details)


def _save_video(directory: Path, name: str, task: str, index: int, log: EpisodeLog) -> Path:
    """Frames as a compressed .npz: ``frames`` (T, H, W, 3) uint8 and ``fps``; no video codec needed."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{task}-episode{index:03d}.npz"
    np.savez_compressed(path, frames=np.stack(log.frames), fps=CONTROL_HZ, success=log.success)
    return path


def rollout(taskset: TaskSet, controller: Controller, request: RolloutRequest) -> RolloutResult:
    return evaluate(taskset, lambda task: controller, request)


def expert_rollout(taskset: TaskSet, request: RolloutRequest) -> RolloutResult:
    return evaluate(taskset, ScriptedExpert, request)
