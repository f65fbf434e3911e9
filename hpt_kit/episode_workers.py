"""Evaluation episodes in worker processes, one simulator each, acting through the parent.

Each worker builds an embodiment's environments from its :class:`~hpt_kit.rollout.RolloutEnvs`
factories and plays the episodes the parent deals it with :func:`hpt_kit.rollout.evaluate_episode`,
the very function serial evaluation uses, so an episode's seed, loop, action checks and video are
the same whichever process runs it. Its controller is a stand-in that sends each observation to
the parent and waits for the action: the parent gathers one observation from every busy worker,
answers them all from one call (a batched policy, :mod:`hpt_kit.policy.parallel`), and so the
simulators step in parallel while the network runs once per control step.

Messages on each worker's pipe, worker to parent: ``("reset",)`` before an episode's first action,
``("act", observation)``, ``("done", EpisodeOutcome)``, ``("error", text)``; parent to worker: an
episode index, an action, or ``None`` (stop).

Workers come from multiprocessing's fork server: a clean single-threaded process, started on the
first evaluation with this module and the plugin's imported, that forks a worker on request. A
plain fork of the evaluating process could inherit a lock held by one of its threads (torch's, zarr's
event loop) and hang; a spawned worker would import everything again, every evaluation. As with any
spawning start method, a script that evaluates in workers must guard its top level with
``if __name__ == "__main__":`` (the ``hpt-kit`` command and pytest do), since workers import the main
module.

Numpy and the standard library only, like :mod:`hpt_kit.rollout`.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from hpt_kit.rollout import EpisodeOutcome, RolloutEnvs, check_video_request, evaluate_episode

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# act(observations by worker) -> actions by worker; reset(worker) before that worker's next episode
ActBatch = Callable[[Mapping[int, Mapping[str, Any]]], Mapping[int, np.ndarray]]


def default_workers() -> int:
    """The CPU cores this process may use: one simulator per core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class WorkerError(RuntimeError):
    """A worker process failed; the message names the embodiment and carries the worker's traceback."""


class _ParentController:
    """The worker's controller: every action comes from the parent process."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def reset(self) -> None:
        self.conn.send(("reset",))

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        self.conn.send(("act", dict(observation)))
        return self.conn.recv()


def _worker(conn: Connection, envs: RolloutEnvs, request: Any) -> None:
    """A worker's life: play the episodes dealt to it until told to stop."""
    built: dict[int, Any] = {}
    controller = _ParentController(conn)
    n = len(envs.sources)
    try:
        while (k := conn.recv()) is not None:
            i = k % n
            if i not in built:
                built[i] = envs.sources[i].make()
            source = envs.sources[i]
            outcome = evaluate_episode(
                envs.name, request, built[i], controller, k, n, source.name, source.key, envs.video_fps
            )
            conn.send(("done", outcome))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it there
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        except OSError:  # the parent stopped listening: it is already raising another worker's error
            pass
    finally:
        for env in built.values():
            close = getattr(env, "close", None)
            if callable(close):
                close()
        conn.close()


def run_in_workers(
    envs: RolloutEnvs, request: Any, workers: int, act: ActBatch, reset: Callable[[int], None]
) -> list[EpisodeOutcome]:
    """Play ``request.episodes`` episodes of ``envs`` in ``workers`` processes (at most one per
    episode) and return their outcomes in episode order.

    Every control step, ``reset(w)`` is called for a worker starting an episode and then ``act`` once
    with the observation of every worker mid-episode, keyed by worker; it returns their actions.
    """
    check_video_request(envs.name, request, envs.video_fps)
    workers = max(1, min(workers, request.episodes))
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["hpt_kit.episode_workers", *_factory_modules(envs)])  # heeded at the server's start
    pipes, procs = [], []
    try:
        with _one_thread_per_worker():
            for _ in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(child, envs, request), daemon=True)
                proc.start()
                child.close()
                pipes.append(parent)
                procs.append(proc)
        return _drive(envs.name, request.episodes, pipes, act, reset)
    finally:
        for conn in pipes:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            conn.close()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()


@contextlib.contextmanager
def _one_thread_per_worker() -> Iterator[None]:
    """Numerical libraries single-threaded in the fork server, so in every worker: a worker is one
    simulator on one core, and BLAS threads spinning beside the other workers and the parent's torch
    made robosuite (numpy-heavy control) slower in two workers than serially on two cores. The
    variables are set while the server starts (the first evaluation in a process) and restored."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: "1" for k in THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _factory_modules(envs: RolloutEnvs) -> list[str]:
    """The plugin modules the workers' factories come from, to import once in the fork server."""
    modules = []
    for source in envs.sources:
        make = getattr(source.make, "func", source.make)  # a functools.partial's function
        module = getattr(make, "__module__", None)
        if module and module not in modules:
            modules.append(module)
    return modules


def _drive(
    name: str, episodes: int, pipes: list[Connection], act: ActBatch, reset: Callable[[int], None]
) -> list[EpisodeOutcome]:
    """Deal episodes 0, 1, ... to workers as they free up; step all busy workers in lock step."""
    outcomes: list[EpisodeOutcome] = []
    dealt = 0
    busy: list[int] = []
    for w, conn in enumerate(pipes):
        if dealt < episodes:
            conn.send(dealt)
            dealt += 1
            busy.append(w)
    while busy:
        observations: dict[int, Mapping[str, Any]] = {}
        for w in list(busy):
            while True:
                message = _receive(name, w, pipes[w])
                if message[0] == "reset":
                    reset(w)
                    continue
                if message[0] == "act":
                    observations[w] = message[1]
                    break
                outcomes.append(message[1])  # "done"
                if dealt < episodes:
                    pipes[w].send(dealt)
                    dealt += 1
                    continue
                busy.remove(w)
                break
        if observations:
            actions = act(observations)
            for w in observations:
                pipes[w].send(actions[w])
    return sorted(outcomes, key=lambda o: o.index)


def _receive(name: str, w: int, conn: Connection) -> tuple:
    try:
        message = conn.recv()
    except EOFError:
        raise WorkerError(f"{name}: evaluation worker {w} exited without a result") from None
    if message[0] == "error":
        raise WorkerError(f"{name}: evaluation worker {w} failed: {message[1]}")
    return message
