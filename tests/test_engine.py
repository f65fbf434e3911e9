"""The engine's local executors: units run in this process or in a pool of processes, results come
back with their index, and a failing unit or a dying worker stops the run naming the unit. The Ray
cluster executor is exercised by tests/test_cluster.py on a real cluster."""

from __future__ import annotations

import os
import signal

import pytest

from hpt_kit.engine import UnitError, open_engine


def square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"episode {x}: bad value")
    return x


def dies_on_two(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_serial_engine_runs_in_this_process_in_order():
    with open_engine(1) as engine:
        results = list(engine.run(square_and_pid, [1, 2, 3]))
    assert results == [(0, (1, os.getpid())), (1, (4, os.getpid())), (2, (9, os.getpid()))]


def test_pool_runs_units_in_other_processes_and_names_a_failing_unit():
    with open_engine(2) as engine:
        assert engine.workers == 2
        results = dict(engine.run(square_and_pid, list(range(6))))
        assert {i: r[0] for i, r in results.items()} == {i: i * i for i in range(6)}
        assert os.getpid() not in {r[1] for r in results.values()}
        with pytest.raises(UnitError, match=r"^unit 3: episode 3: bad value$"):
            list(engine.run(fails_on_three, list(range(6)), describe=lambda x: f"unit {x}"))


def test_pool_names_the_unit_whose_worker_died():
    with open_engine(2) as engine, pytest.raises(UnitError, match="a worker process died while running") as error:
        list(engine.run(dies_on_two, [0, 1, 2, 3], describe=lambda x: f"unit {x}"))
    assert "unit 2" in str(error.value)


def test_workers_below_one_are_refused():
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        open_engine(0)


def thread_counts(_: int) -> tuple[str | None, int]:
    import torch

    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def test_pool_workers_share_the_cores_out():
    """Each worker's thread pools get the cores divided among the workers (torch included, though
    its fork server had loaded torch before the worker started)."""
    from hpt_kit.engine import worker_threads

    assert worker_threads(2) == max(1, os.cpu_count() // 2) and worker_threads(4 * os.cpu_count()) == 1
    with open_engine(2, preload=("torch",)) as engine:
        counts = {r for _, r in engine.run(thread_counts, [0, 1])}
    assert counts == {(str(worker_threads(2)), worker_threads(2))}
