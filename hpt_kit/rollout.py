"""The episode loops every simulator plugin needs, written once.

A plugin brings what is its own: an environment that answers the :class:`EpisodeEnv` protocol (reset
from a generator, step, observation, video frame) and the controller that drives it, bundled as an
:class:`EpisodeSource`. The kit's loops do the rest the same way for every plugin: seeding each
episode on its own, the expert collection with retries and its notes (:func:`collect_episodes`),
evaluation into a ``RolloutResult`` (:func:`evaluate`) and videos on disk (:func:`save_video`, mp4 or npz).

Seeding: episode ``j`` of a source with seed key ``key`` draws from
``SeedSequence(seed, spawn_key=(stream, *key, j))``, with one stream for conversion and another for
rollouts, so evaluating with a dataset's seed never replays its episodes, and every episode is
reproducible on its own whatever ran before it. An expert's retry ``r`` of episode ``j`` draws from
``(stream, *key, j, r)``: which episodes a conversion yields does not depend on failures before
them, so a range of episodes (``ConvertRequest.first``) converts alone to what the whole run gives.

This module is part of the plugin-facing API: it imports numpy and the standard library only, and
the kit's spec types from the package root when a function runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from hpt_kit.core.spec import Controller, ConvertRequest, RolloutRequest, RolloutResult

CONVERT_STREAM = 0  # seed stream of dataset conversion
ROLLOUT_STREAM = 1  # seed stream of evaluation: never the episodes a dataset was made from
SPARE_ATTEMPTS = 20  # expert attempts per source stop at twice its share of episodes plus these


def episode_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per episode: ``key`` is e.g. (stream, index), with one stream for
    conversion and another for rollouts, so evaluation never replays a training episode."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def checked_action(action: object, dim: int, name: str, low: Any = -1.0, high: Any = 1.0) -> np.ndarray:
    """A controller's action as float32 (dim,), clipped to [low, high] (scalars or per dimension; by
    default the unit box); a wrong shape or a non-finite value is an error naming the embodiment."""
    arr = np.asarray(action, dtype=np.float32).reshape(-1)
    if arr.shape != (dim,):
        raise ValueError(f"{name}: controller returned an action of shape {arr.shape}, expected ({dim},)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: controller returned a non-finite action {arr}")
    return np.clip(arr, np.asarray(low, np.float32), np.asarray(high, np.float32))


@dataclass
class EpisodeLog:
    """What one episode's controller saw and did, plus its outcome: the one record every loop here
    keeps, so conversion, evaluation and videos read an episode the same way."""

    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # video frames, not part of the episode
    episode_return: float = 0.0
    success: bool = False

    def to_episode(self) -> dict[str, np.ndarray]:
        """The episode as ``convert_dataset`` yields it: time-major ``state``, ``action`` and, when the
        controller saw cameras, ``image``; video frames stay out."""
        episode = {"state": np.stack(self.states), "action": np.stack(self.actions)}
        if self.images:
            episode["image"] = np.stack(self.images)
        return episode


class EpisodeEnv(Protocol):
    """A plugin's environment as the shared loop drives it.

    An observation is the dict the controller receives: ``state`` always, ``image`` (views, H, W, 3)
    when the embodiment observes cameras, and whatever else the plugin's spec promises (an
    instruction, say). The loop records ``state`` and ``image`` into the episode.
    """

    action_dim: int
    max_steps: int  # the episode ends here if it has not succeeded before
    # Optional: the bounds actions are clipped to, scalars or per dimension (the ActionSpec's low and
    # high); an env without them gets actions clipped to [-1, 1].
    # action_low: float | Sequence[float]
    # action_high: float | Sequence[float]

    def reset(self, rng: np.random.Generator) -> Mapping[str, Any]:
        """Start an episode drawn from ``rng`` alone; return the first observation."""
        ...

    def step(self, action: np.ndarray) -> tuple[Mapping[str, Any], float, bool]:
        """Apply one checked action; return (observation, reward, success)."""
        ...

    def frame(self) -> np.ndarray:
        """One (H, W, 3) uint8 video frame; called only when a rollout records videos."""
        ...


@dataclass(frozen=True)
class EpisodeSource:
    """Where episodes come from: an environment and the controller that drives it (the expert when
    collecting, the policy under test when evaluating).

    A plugin with several tasks gives one source per task, each ``name``d and with its own seed
    ``key``; the loops deal episodes over them in turn and report per task. ``fields`` are stored
    with every collected episode of this source (a task's instruction, say).
    """

    env: EpisodeEnv
    controller: Controller
    name: str = ""  # the task, in notes, details and video names; "" for a plugin's only source
    key: tuple[int, ...] = ()  # seed key between the stream and the episode index
    fields: Mapping[str, Any] = field(default_factory=dict)


def run_episode(
    name: str, env: EpisodeEnv, controller: Controller, rng: np.random.Generator, video: bool = False
) -> EpisodeLog:
    """One closed-loop episode, ended by success or by ``env.max_steps``: what the controller saw and
    did, and with ``video`` a frame before every action and one of the final state.

    :func:`collect_episodes` and :func:`evaluate` call it; call it directly for a loop of your own.
    ``name`` (the embodiment) is what a bad action's error names.
    """
    log = EpisodeLog()
    observation = env.reset(rng)
    controller.reset()
    for _ in range(env.max_steps):
        if video:
            log.frames.append(env.frame())
        low, high = getattr(env, "action_low", -1.0), getattr(env, "action_high", 1.0)
        action = checked_action(controller.act(observation), env.action_dim, name, low, high)
        log.states.append(observation["state"])
        if "image" in observation:
            log.images.append(observation["image"])
        log.actions.append(action)
        observation, reward, log.success = env.step(action)
        log.episode_return += reward
        if log.success:
            break
    if video:
        log.frames.append(env.frame())
    return log


def collect_episodes(
    name: str, request: ConvertRequest, sources: Sequence[EpisodeSource]
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``request.episodes`` successful episodes of each source's controller (its expert), for a
    plugin's ``convert_dataset``: episodes ``request.first`` .. ``first + episodes - 1`` of the
    sequence, each the same whichever range it is converted in (see the module's seeding).

    Episode ``k`` comes from source ``k mod n``. A failed attempt is dropped and retried with that
    episode's next retry seed; a source that needs more than twice its share plus ``SPARE_ATTEMPTS``
    attempts is an error.
    After every attempt ``request.notes`` holds ``episodes_attempted``, ``episodes_dropped`` and
    ``expert_success_rate`` over all sources, and with named sources the same ``per_task``; a range
    that does not start at 0 also records ``first_episode``.
    """
    first, end = request.first, request.first + request.episodes
    share = [len([k for k in range(first, end) if k % len(sources) == i]) for i in range(len(sources))]
    kept, attempts = [0] * len(sources), [0] * len(sources)
    if first:
        request.notes["first_episode"] = first
    for k in range(first, end):
        i = k % len(sources)
        source = sources[i]
        for retry in itertools.count():
            if attempts[i] >= 2 * share[i] + SPARE_ATTEMPTS:
                expert = f"{source.name} expert" if source.name else "expert"
                failed = attempts[i] - kept[i]
                raise RuntimeError(f"{name}: the {expert} failed {failed} of {attempts[i]} episodes")
            j = k // len(sources)  # the episode's index within its source
            rng = episode_rng(request.seed, CONVERT_STREAM, *source.key, *((j,) if retry == 0 else (j, retry)))
            log = run_episode(name, source.env, source.controller, rng)
            attempts[i] += 1
            kept[i] += log.success
            request.notes.update(_collection_notes(sources, kept, attempts))
            if log.success:
                yield {**log.to_episode(), **source.fields}
                break


def _collection_notes(
    sources: Sequence[EpisodeSource], kept: list[int], attempts: list[int]
) -> dict[str, Any]:
    total_kept, total = sum(kept), sum(attempts)
    notes: dict[str, Any] = {
        "episodes_attempted": total,
        "episodes_dropped": total - total_kept,
        "expert_success_rate": total_kept / total,
    }
    if any(source.name for source in sources):
        notes["per_task"] = {
            source.name: {
                "episodes": n,
                "episodes_attempted": tried,
                "episodes_dropped": tried - n,
                "expert_success_rate": n / tried if tried else None,
            }
            for source, n, tried in zip(sources, kept, attempts, strict=True)
        }
    return notes


def evaluate(
    name: str,
    request: RolloutRequest,
    sources: Sequence[EpisodeSource],
    video_fps: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> RolloutResult:
    """Run ``request.episodes`` episodes of each source's controller into a ``RolloutResult``, for a
    plugin's ``rollout`` and ``expert_rollout``.

    Episodes are dealt over the sources in turn, the ``j``-th of a source drawn from the rollout
    stream. With ``request.video_dir`` each episode is saved by :func:`save_video` at ``video_fps``,
    named ``{name}[-{source}]-episode{k:03d}-{success|failure}.{request.video_format}``; an embodiment
    that gives no ``video_fps`` records no videos and says so before running anything. ``details`` go into the result, after the success
    rate ``per_task`` that named sources add.
    """
    check_video_request(name, request, video_fps)
    outcomes = []
    for k in range(request.episodes):
        source = sources[k % len(sources)]
        outcomes.append(
            evaluate_episode(name, request, source.env, source.controller, k, len(sources), source.name, source.key, video_fps)
        )
    return outcomes_result(outcomes, details)


def check_video_request(name: str, request: RolloutRequest, video_fps: float | None) -> None:
    """Refuse videos an embodiment cannot record, or an unknown format, before any episode runs."""
    from hpt_kit.core.spec import SpecError
    from hpt_kit.video import VIDEO_FORMATS

    record = request.video_dir is not None
    if record and video_fps is None:
        raise SpecError(f"embodiment {name!r} does not record videos")
    if record and request.video_format not in VIDEO_FORMATS:
        raise SpecError(f"unknown video format {request.video_format!r}; known: {', '.join(VIDEO_FORMATS)}")


@dataclass(frozen=True)
class EpisodeOutcome:
    """One evaluation episode as a result counts it: episode ``index`` of the call, its source's
    ``task`` name ("" for a plugin's only source), and its video file when one was recorded."""

    index: int
    task: str
    success: bool
    episode_return: float
    length: int
    video: str | None = None


def evaluate_episode(
    name: str,
    request: RolloutRequest,
    env: EpisodeEnv,
    controller: Controller,
    k: int,
    num_sources: int,
    task: str = "",
    key: tuple[int, ...] = (),
    video_fps: float | None = None,
) -> EpisodeOutcome:
    """Episode ``k`` of an evaluation over ``num_sources`` sources, run on the source's ``env`` (the
    one with ``task`` name and seed ``key``): its draw is the ``k // num_sources``-th of that source
    in the rollout stream, whichever process runs it, so serial and parallel evaluation (worker
    processes, :mod:`hpt_kit.episode_workers`) play the same episodes."""
    rng = episode_rng(request.seed, ROLLOUT_STREAM, *key, k // num_sources)
    record = request.video_dir is not None
    log = run_episode(name, env, controller, rng, video=record)
    video = None
    if record:
        stem = f"{name}-{task}" if task else name
        outcome = "success" if log.success else "failure"
        path = Path(request.video_dir) / f"{stem}-episode{k:03d}-{outcome}.{request.video_format}"
        video = str(save_video(path, log, video_fps))
    return EpisodeOutcome(k, task, log.success, float(log.episode_return), len(log.actions), video)


def outcomes_result(outcomes: Sequence[EpisodeOutcome], details: Mapping[str, Any] | None = None) -> RolloutResult:
    """The ``RolloutResult`` of episodes in index order, with the success rate ``per_task`` when the
    sources are named, then ``details``."""
    from hpt_kit.core.spec import RolloutResult

    outcomes = sorted(outcomes, key=lambda o: o.index)
    per_task: dict[str, list[bool]] = {}
    for o in outcomes:
        if o.task:
            per_task.setdefault(o.task, []).append(o.success)
    summary = {"per_task": {t: float(np.mean(s)) for t, s in per_task.items()}} if per_task else {}
    return RolloutResult.from_episodes(
        [o.success for o in outcomes],
        [o.episode_return for o in outcomes],
        [o.length for o in outcomes],
        [o.video for o in outcomes if o.video is not None],
        {**summary, **(details or {})},
    )


@dataclass(frozen=True)
class EnvFactory:
    """One episode source of an evaluation, as a recipe for its environment: ``make()`` builds the
    environment in the process that runs the episodes. ``make`` must pickle (a module-level function,
    or a ``functools.partial`` of one over picklable arguments); ``name`` and ``key`` are the
    source's, as in :class:`EpisodeSource`."""

    make: Callable[[], EpisodeEnv]
    name: str = ""
    key: tuple[int, ...] = ()


@dataclass(frozen=True)
class RolloutEnvs:
    """What an embodiment's ``rollout`` would run for a request, without a controller: its sources as
    :class:`EnvFactory` objects, its video rate and its result details. An embodiment's optional
    ``rollout_envs(request)`` returns this, and the kit's parallel evaluator builds the environments
    once per worker process and drives them with one batched policy."""

    name: str  # the embodiment: what errors and video names say
    sources: tuple[EnvFactory, ...]
    video_fps: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def save_video(path: Path, log: EpisodeLog, fps: float) -> Path:
    """Write an episode's video frames to ``path``: ``.mp4`` (H.264) or ``.npz`` (``frames``
    (T, H, W, 3) uint8, ``fps``, ``success``; no codec needed), see :mod:`hpt_kit.video`.
    :func:`evaluate` uses it, and a plugin with a loop of its own should too, so every embodiment's
    videos read the same way (:func:`hpt_kit.video.read_frames`)."""
    from hpt_kit.video import write_video

    return write_video(Path(path), log.frames, fps, log.success)
