"""Fanning work units out: in this process, in a local process pool, or on a Ray cluster.

One interface for every command that fans out (``convert``, ``import``): :func:`open_engine` gives
an :class:`Engine` whose ``run(fn, units)`` calls ``fn(unit)`` for every unit and yields ``(index,
result)`` as units finish. A unit is pure (a function of its inputs that writes one result
atomically and returns a small record), so where it runs changes nothing in what it makes.

- ``workers = 1`` and no address: in this process, one unit after another.
- ``workers = N`` and no address: a local pool of N processes (multiprocessing's fork server). It
  starts in about 0.1 s, where a local Ray instance took 6.4 s to start (and 1.3 s to stop) on the
  same machine, so a single machine does without Ray. What its fork server preloads (the plugins:
  seconds) loads while the command does its own start-up when the command calls :func:`start_pool`
  first; each worker's thread pools get the cores divided by N.
- an address (``--address HOST:PORT`` or ``RAY_ADDRESS``): the units are Ray tasks on that running
  cluster (one CPU each, ``workers`` of them at a time when given). Every node needs the kit and the
  same plugins installed, and the dataset folder on a filesystem all of them share.

A unit that raises, or whose worker dies, stops the run with :class:`UnitError` naming the unit and
where it ran; units not yet started are cancelled, and finished results stay where they were written.
"""

from hpt_kit.engine.executors import (
    Engine,
    UnitError,
    open_engine,
    peak_rss_mb,
    ray_address,
    start_pool,
    thread_budget,
    worker_threads,
)

__all__ = ["Engine", "UnitError", "open_engine", "peak_rss_mb", "ray_address", "start_pool", "thread_budget",
           "worker_threads"]
