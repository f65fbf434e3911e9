"""Exclusive locks on a run directory or a dataset path, held for as long as the work on it lasts.

The lock is an advisory ``fcntl.flock`` on a small file (``RUN/.lock``, ``.NAME.zarr.lock`` beside a
dataset). The kernel drops it when its process dies, however it dies, so a lock left by a killed
process is never mistaken for a live one: the file's content (pid, host, command, start time) only
serves the message that names the holder. A second process asking for a held lock gets a
:class:`LockError` naming the path and the holder instead of silently interleaving its writes.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any


class LockError(RuntimeError):
    """The path is locked by another live process; the message names the path and the holder."""


def _holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _holder_written(fd: int, patience: float = 0.5) -> dict[str, Any]:
    """The holder's details; a holder that has just taken the lock writes them a moment later, so an
    empty file is read again for up to ``patience`` seconds before the message says "another process"."""
    deadline = time.monotonic() + patience
    info = _holder(fd)
    while not info and time.monotonic() < deadline:
        time.sleep(0.02)
        info = _holder(fd)
    return info


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def describe_holder(info: dict[str, Any]) -> str:
    if not info:
        return "another process"
    return (
        f"pid {info.get('pid', '?')} on {info.get('host', '?')} "
        f"(since {info.get('since', '?')}: {info.get('command', '?')})"
    )


class PathLock:
    """``with PathLock(lock_file, what):`` holds the exclusive lock for the block.

    ``wait`` seconds are spent retrying before giving up (0: fail at once). Re-entrant within one
    object only: a process locking the same path twice through two objects is refused like any other.
    """

    def __init__(self, lock_file: str | Path, what: str, wait: float = 0.0):
        self.lock_file = Path(lock_file)
        self.what = what
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> PathLock:
        if self._fd is not None:
            return self
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:  # the holder is read only for the message, once
                    holder = describe_holder(_holder_written(fd))
                    os.close(fd)
                    raise LockError(f"{self.what} is in use by {holder}; wait for it to finish or stop it") from None
                os.close(fd)
                time.sleep(0.1)
                continue
            if _same_file(fd, self.lock_file):
                break
            os.close(fd)  # the holder released and removed it between our open and our lock: again
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file, then unlock: a process that opened the old file meanwhile sees it is
        gone once it holds the lock, and tries again on a new one."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.lock_file):
                self.lock_file.unlink()
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> PathLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_lock(run_dir: str | Path) -> PathLock:
    """The lock of a run directory (``RUN/.lock``)."""
    run_dir = Path(run_dir)
    return PathLock(run_dir / ".lock", f"run directory {run_dir}")


def dataset_lock(path: str | Path, wait: float = 0.0) -> PathLock:
    """The lock of a dataset path (``.NAME.zarr.lock`` beside it, so it survives the dataset's replacement)."""
    path = Path(path)
    return PathLock(path.parent / f".{path.name}.lock", f"dataset {path}", wait)
