"""How many threads a training process gives torch, so that kit processes sharing a machine's cores do
not bury each other.

torch starts one compute thread per core. Two training processes on the same two cores then run four
busy threads that preempt each other inside every matrix product, and both slow down far more than
twice (measured in the README). The rule: ``[train] threads = N`` (``--threads N``) is used as given;
else an ``OMP_NUM_THREADS`` set in the environment is left to torch (torchrun sets it); else the
cores this process may use, divided by the kit training processes running on the machine (this one
included), at least 1, counted once when the run starts: a count that changed mid-run would change
how torch's sums round, and a run's numbers would depend on what else the machine ran. A resumed run
keeps the count it started with (recorded in ``metrics.jsonl``) unless a setting says otherwise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

TRAINING_COMMANDS = ("pretrain", "transfer", "experiment")


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _is_training(argv: list[str]) -> bool:
    """Whether a command line is a kit training command (``hpt-kit pretrain ...``, ``python -m hpt_kit
    transfer ...``)."""
    for i, arg in enumerate(argv):
        kit = Path(arg).name == "hpt-kit" or (arg == "hpt_kit" and i > 0 and argv[i - 1] == "-m")
        if kit:
            rest = [a for a in argv[i + 1 :] if not a.startswith("-")]
            return bool(rest) and rest[0] in TRAINING_COMMANDS
    return False


def training_processes(proc: Path = Path("/proc")) -> int:
    """Kit training processes running on this machine, this one included (Linux; elsewhere 1)."""
    others = 0
    me = os.getpid()
    for entry in proc.glob("[0-9]*") if proc.is_dir() else ():
        if int(entry.name) == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone, or not ours to read
            continue
        others += _is_training(argv)
    return others + 1


def auto_threads() -> int:
    return max(1, cores() // training_processes())


class Threads:
    """Applies the rule above once, when a run starts. ``recorded`` is the count the run being resumed
    started with (its first ``metrics.jsonl`` record): an automatic setting keeps it, so a resumed run
    does the same arithmetic as the run it continues whatever else the machine runs now."""

    def __init__(self, setting: int, recorded: int | None = None):
        self.setting = setting
        self.auto = setting <= 0 and not os.environ.get("OMP_NUM_THREADS")
        if setting > 0:
            self._set(setting, "[train] threads")
        elif not self.auto:
            log.info("torch threads: %d (OMP_NUM_THREADS)", self.current())
        elif recorded:
            self._set(recorded, "as the run being resumed started")
        else:
            self._set(auto_threads(), f"{cores()} cores shared by {training_processes()} kit training process(es)")

    @staticmethod
    def current() -> int:
        import torch

        return torch.get_num_threads()

    def _set(self, n: int, why: str) -> None:
        import torch

        torch.set_num_threads(n)
        log.info("torch threads: %d (%s)", n, why)


def recorded_threads(run_dir: Path) -> int | None:
    """The thread count a run's first ``metrics.jsonl`` record gives, if any."""
    from hpt_kit.train.record import read_metrics

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    for record in read_metrics(path):
        if record.get("event") == "start":
            threads = record.get("threads")
            return int(threads) if isinstance(threads, int) and threads > 0 else None
    return None
