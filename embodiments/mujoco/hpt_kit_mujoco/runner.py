"""The episode loop, and the three entry points built on it: dataset conversion, rollout of a learned
controller and rollout of the scripted expert.

Seeding: episode ``i`` of a call with seed ``s`` draws its start pose and target from
``SeedSequence(s, spawn_key=(stream, i))``, with one stream for conversion and another for rollouts.
The same seed therefore never evaluates a policy on the episodes it was trained on, and each episode
is reproducible on its own, whatever ran before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import mujoco
import numpy as np
from hpt_kit import Controller, ConvertRequest, RolloutRequest, RolloutResult, SpecError
from hpt_kit.rollout import EpisodeLog, checked_action, episode_rng

from hpt_kit_mujoco.expert import ReachExpert
from hpt_kit_mujoco.reach import ArmTask, ReachEnv

CONVERT_STREAM = 0
ROLLOUT_STREAM = 1
VIDEO_SIZE = 128
VIDEO_CAMERA = "front"


def run_episode(
    env: ReachEnv,
    controller: Controller,
    rng: np.random.Generator,
    images: bool = False,
    video: bool = False,
) -> EpisodeLog:
    """One episode, ended by success or by ``max_steps``; records what the controller saw and did."""
    log = EpisodeLog()
    state = env.reset(rng)
    controller.reset()
    for _ in range(env.task.max_steps):
        observation = {"state": state}
        if images:
            observation["image"] = env.images()
            log.images.append(observation["image"])
        if video:
            log.frames.append(env.render(VIDEO_CAMERA, VIDEO_SIZE))
        action = checked_action(controller.act(observation), env.n, env.task.name)
        log.states.append(state)
        log.actions.append(action)
        state, reward, log.success = env.step(action)
        log.episode_return += reward
        if log.success:
            break
    if video:
        log.frames.append(env.render(VIDEO_CAMERA, VIDEO_SIZE))
    return log


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
    expert = ReachExpert(env)
    max_attempts = 2 * request.episodes + 20
    kept = attempts = 0
    notes = request.notes
    notes.update(mujoco_version=mujoco.__version__, success_threshold_m=task.success_threshold)
    try:
        while kept < request.episodes:
            if attempts >= max_attempts:
                raise RuntimeError(f"{task.name}: the expert failed {attempts - kept} of {attempts} episodes")
            log = run_episode(
                env, expert, episode_rng(request.seed, CONVERT_STREAM, attempts), images=bool(task.views)
            )
            attempts += 1
            kept += log.success
            notes.update(
                episodes_attempted=attempts,
                episodes_dropped=attempts - kept,
                expert_success_rate=kept / attempts,
            )
            if log.success:
                yield log.to_episode()
    finally:
        env.close()


def evaluate(
    task: ArmTask, make_controller: Callable[[ReachEnv], Controller], request: RolloutRequest
) -> RolloutResult:
    """Run ``request.episodes`` episodes with the controller ``make_controller(env)`` returns."""
    _check_render(task, request.render)
    env = ReachEnv(task)
    controller = make_controller(env)
    successes, returns, lengths, videos = [], [], [], []
    try:
        for i in range(request.episodes):
            record = request.video_dir is not None
            log = run_episode(
                env,
                controller,
                episode_rng(request.seed, ROLLOUT_STREAM, i),
                images=request.render,
                video=record,
            )
            successes.append(log.success)
            returns.append(log.episode_return)
            lengths.append(len(log.actions))
            if record:
                videos.append(str(_save_video(Path(request.video_dir), task.name, i, log, env.control_hz)))
    finally:
        env.close()
    details = {"success_threshold_m": task.success_threshold, "max_episode_steps": task.max_steps}
    return RolloutResult.from_episodes(successes, returns, lengths, videos, details)


def _save_video(directory: Path, name: str, index: int, log: EpisodeLog, fps: float) -> Path:
    """Frames as a compressed .npz: ``frames`` (T, H, W, 3) uint8 and ``fps``; no video codec needed."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-episode{index:03d}.npz"
    np.savez_compressed(path, frames=np.stack(log.frames), fps=fps, success=log.success)
    return path


def rollout(task: ArmTask, controller: Controller, request: RolloutRequest) -> RolloutResult:
    return evaluate(task, lambda env: controller, request)


def expert_rollout(task: ArmTask, request: RolloutRequest) -> RolloutResult:
    return evaluate(task, ReachExpert, request)
