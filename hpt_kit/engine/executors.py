"""The three engines behind :func:`open_engine` (see the package docstring)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Passed on to Ray workers, which do not inherit the driver's environment: where datasets live and
# how simulators render.
PASSED_ENV = ("HPT_KIT_DATA", "MUJOCO_GL", "PYOPENGL_PLATFORM", "HF_HOME", "HF_HUB_OFFLINE")
# A worker's thread pools (OpenMP, MKL, OpenBLAS; torch reads OMP_NUM_THREADS): the cores shared out among
# the workers, read by each library when it is imported.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class UnitError(RuntimeError):
    """A unit failed or its worker died; the message names the unit and what happened."""


def ray_address(address: str | None = None) -> str | None:
    """The cluster to use: ``address`` if given, else ``RAY_ADDRESS``, else none (this machine)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Engine:
    """Runs units; ``name`` says where (for progress lines), ``workers`` how many at a time."""

    name = "this process"
    workers = 1

    def run(
        self, fn: Callable[[Any], Any], units: Sequence[Any], describe: Callable[[Any], str] = str
    ) -> Iterator[tuple[int, Any]]:
        for i, unit in enumerate(units):
            try:
                result = fn(unit)
            except Exception as exc:  # noqa: BLE001 - any unit failure is reported the same way
                raise UnitError(f"{describe(unit)}: {_first_line(exc)}") from exc
            yield i, result

    def close(self) -> None:
        pass

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_threads(workers: int) -> int:
    """Threads per local worker: this machine's cores shared out among ``workers``, at least one."""
    return max(1, (os.cpu_count() or 1) // workers)


def start_pool(workers: int, preload: Sequence[str] = ()) -> None:
    """Start the fork server of a local pool of ``workers`` now, in the background, and return: it
    imports ``preload`` while this process goes on with its own start-up (loading plugins, reading a
    source), where the pool's first unit would otherwise wait for both in turn. Its environment holds
    the workers' thread counts (:func:`worker_threads`, unless set already), so that the libraries it
    imports size their thread pools by them. Nothing for one worker; a fork server already running is
    kept as it is (its modules and thread counts are those it started with)."""
    if workers < 2:
        return
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    if preload:
        context.set_forkserver_preload(list(preload))
    saved = {key: os.environ.get(key) for key in THREAD_ENV}
    threads = thread_budget() or worker_threads(workers)  # a count set here is kept
    for key in THREAD_ENV:
        os.environ.setdefault(key, str(threads))
    try:
        forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def thread_budget() -> int | None:
    """The threads this process's libraries may use: ``OMP_NUM_THREADS`` when it is one count (a
    pool worker's share of the cores, or the user's setting), else None (each library's default).
    Libraries that do not read it themselves (FFmpeg's decoders) are sized by it."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return None


def _worker_start(threads: int, driver: int) -> None:
    for key in THREAD_ENV:
        os.environ.setdefault(key, str(threads))
    if "torch" in sys.modules:  # loaded by the fork server: its pool follows the environment it started with
        sys.modules["torch"].set_num_threads(thread_budget() or threads)
    threading.Thread(target=_exit_without, args=(driver,), daemon=True).start()


def _exit_without(driver: int) -> None:
    """A pool's worker ends when the command that owns the pool is gone (killed): its parent is the
    fork server, and its end of the task queue never reports the command's death."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(driver, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


class PoolEngine(Engine):
    """``workers`` local processes from multiprocessing's fork server (a plain fork of a process that
    has loaded torch or zarr can hang on a lock one of their threads held). ``preload``: modules the
    fork server imports when it starts, so that every worker forked from it has them (the plugins,
    loaded once instead of once per worker); heeded only by a fork server not yet running
    (:func:`start_pool` starts it early). Each worker runs :func:`worker_threads` threads."""

    def __init__(self, workers: int, preload: Sequence[str] = ()):
        self.workers = workers
        self.name = f"{workers} local processes"
        start_pool(workers, preload)
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                                         initializer=_worker_start, initargs=(worker_threads(workers), os.getpid()))

    def run(self, fn, units, describe=str):
        queue = list(enumerate(units))
        pending: dict[Future, int] = {}
        try:
            while queue or pending:
                while queue and len(pending) < self.workers:  # no more queued than run: a failure cancels the rest
                    i, unit = queue.pop(0)
                    pending[self._pool.submit(fn, unit)] = i
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    i = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:  # every unit in flight fails with it: name them all
                        running = sorted([i, *pending.values()])
                        which = "it" if len(running) == 1 else "one of them"
                        raise UnitError(
                            f"{'; '.join(describe(units[j]) for j in running)}: a worker process died while "
                            f"running {which} (killed, or out of memory)"
                        ) from None
                    except Exception as exc:  # noqa: BLE001
                        raise UnitError(f"{describe(units[i])}: {_first_line(exc)}") from exc
                    yield i, result
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayEngine(Engine):
    """Units as Ray tasks (one CPU each) on the cluster at ``address``. A task is not retried when
    its worker dies: the run stops naming the unit, and the command's ``--resume`` redoes it."""

    def __init__(self, address: str, workers: int | None):
        try:
            import ray
        except ImportError:
            raise UnitError(
                f"--address {address}: Ray is not installed here; install it with pip install 'hpt-kit[cluster]'"
            ) from None
        self._ray = ray
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ} | {k: "1" for k in THREAD_ENV}
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError
            hint = "" if os.environ.get("RAY_AUTH_MODE") else (
                "; a cluster with token authentication (Ray's default) also needs RAY_AUTH_MODE=token and its token here"
            )
            raise UnitError(f"Ray cluster at {address}: cannot connect ({_first_line(exc)}){hint}") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or cpus
        self.name = f"Ray cluster at {address} ({cpus} CPUs)"

    def run(self, fn, units, describe=str):
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        queue = list(enumerate(units))
        pending: dict[Any, int] = {}
        try:
            while queue or pending:
                while queue and len(pending) < self.workers:
                    i, unit = queue.pop(0)
                    pending[remote.remote(unit)] = i
                done, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    raise UnitError(f"{describe(units[i])}: {_first_line(cause)}") from None
                except ray.exceptions.RayError as exc:  # the worker or its node died
                    raise UnitError(
                        f"{describe(units[i])}: its Ray worker died while running it ({type(exc).__name__})"
                    ) from None
                yield i, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        self._ray.shutdown()


def open_engine(workers: int = 1, address: str | None = None, preload: Sequence[str] = ()) -> Engine:
    """The engine for ``workers`` and ``address`` (see :func:`ray_address`); ``preload``: modules a
    local pool's workers start with (:class:`PoolEngine`)."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    address = ray_address(address)
    if address:
        return RayEngine(address, workers if workers > 1 else None)
    return PoolEngine(workers, preload) if workers > 1 else Engine()


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB, for a unit's record and the benches. Linux keeps
    ``ru_maxrss`` across exec (a child started by a big parent would report the parent's peak), so
    the process's own high-water mark (``VmHWM``) is read first."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
