"""Reading stretches of datasets in separate processes, into buffers both processes map.

Decoding zarr chunks holds the interpreter lock for much of the time it takes. Done by a thread of the
training process, it stalls batch assembly: on 2 cores the bench's sampler ran at about 20,000
samples/s with a reading thread beside it against 70,000 without one. A reading process has its own
interpreter. Its buffers are files in ``/dev/shm`` (memory) when that has room for them, otherwise in
the temporary directory; they are unlinked as soon as both processes have mapped them, so nothing is
left on disk however either process ends.

A run's streamed datasets share one :class:`ReaderPool`: a fixed number of reading processes, each
serving several datasets, so that start-up time and memory do not grow with the number of datasets
(a process of its own per dataset took about 0.55 s to start and 40 MB).

This module imports numpy and the store only, so the reading process starts without torch.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.data.store import Dataset, DatasetError

SHM = Path("/dev/shm")
MAX_READERS = 8  # the automatic count's ceiling


def default_readers() -> int:
    """Reading processes for a run: half the cores this process may use, 1 to :data:`MAX_READERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_READERS, cores // 2))


def _buffer_dir(nbytes: int) -> str | None:
    """``/dev/shm`` when it exists with room for ``nbytes`` and a margin, else the default temp dir."""
    try:
        if SHM.is_dir() and shutil.disk_usage(SHM).free > 2 * nbytes:
            return str(SHM)
    except OSError:
        pass
    return None


class _Process:
    """One reading process, ``python -m hpt_kit.data.reader``, spoken to over its stdin and stdout:
    unlike multiprocessing's spawn it never re-imports the caller's main script, and unlike fork it
    does not inherit zarr's event-loop thread. It exits when its stdin closes, so it never outlives
    the caller. Commands are lines naming a dataset's id; each is answered by one line starting with
    that id, in the order sent, so replies are kept by id until their reader asks for them."""

    def __init__(self) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", "hpt_kit.data.reader"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.datasets = 0  # served now
        self._replies: dict[str, str] = {}
        self._partial = b""
        self._eof = False

    def send(self, line: str) -> None:
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def _read(self, block: bool) -> None:
        """Take in whatever replies the process has written (waiting for some if ``block``)."""
        fd = self.popen.stdout.fileno()
        if self._eof or (not block and not select.select([fd], [], [], 0)[0]):
            return
        data = os.read(fd, 1 << 16)
        if not data:
            self._eof = True
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            ident, _, reply = line.decode().partition(" ")
            self._replies[ident] = reply

    def has_reply(self, ident: str) -> bool:
        """Whether ``ident``'s reply (or the process's end) has come; never waits."""
        self._read(block=False)
        return ident in self._replies or self._eof

    def reply(self, ident: str) -> str | None:
        """``ident``'s reply, waiting for it; ``None`` when the process ended first."""
        while ident not in self._replies and not self._eof:
            self._read(block=True)
        return self._replies.pop(ident, None)

    def exit_code(self) -> int | None:
        return self.popen.wait() if self._eof else self.popen.poll()


class ReaderPool:
    """At most ``processes`` reading processes (default :func:`default_readers`), started as datasets
    are opened (``StretchReader(..., pool=)``); each dataset is served by the process serving the fewest. A process reads one
    stretch at a time, so the datasets it serves queue for it; which rows a sampler reads never
    depends on it, so batches are the same for any count."""

    def __init__(self, processes: int = 0):
        self.processes = processes or default_readers()
        self._procs: list[_Process] = []
        self._ids = 0
        self._finalize = weakref.finalize(self, _shutdown, self._procs)

    def _assign(self) -> tuple[_Process, str]:
        """The process to serve a new dataset, and the dataset's id: an idle one, else a new one while
        fewer than ``processes`` run, else the one serving the fewest."""
        if all(p.datasets for p in self._procs) and len(self._procs) < self.processes:
            self._procs.append(_Process())
        proc = min(self._procs, key=lambda p: p.datasets)
        proc.datasets += 1
        self._ids += 1
        return proc, str(self._ids)

    def running(self) -> int:
        """Reading processes started so far."""
        return len(self._procs)

    def close(self) -> None:
        """Stop every reading process (its readers cannot read afterwards)."""
        self._finalize()


class StretchReader:
    """Copies rows ``start:stop`` of a dataset's fields into one of ``buffers`` buffers of ``rows`` rows
    each, one request at a time: :meth:`request`, then :meth:`wait` (or poll :meth:`ready`), then read
    the rows through :meth:`views`. Served by a process of ``pool`` (default: a pool of one process
    of its own, stopped with it)."""

    def __init__(self, path: str | Path, fields: Mapping[str, tuple[np.dtype, tuple[int, ...]]], rows: int, buffers: int,
                 pool: ReaderPool | None = None):
        self.path = str(path)
        self.rows = rows
        self.nbytes = buffers * sum(rows * np.dtype(d).itemsize * int(np.prod(s)) for d, s in fields.values())
        self._dir = Path(tempfile.mkdtemp(prefix="hpt-kit-stream-", dir=_buffer_dir(self.nbytes)))
        layout = [
            {f: (str(self._dir / f"{i}-{f}"), np.dtype(d).str, [rows, *s]) for f, (d, s) in fields.items()}
            for i in range(buffers)
        ]
        try:  # reserve the memory now: a full /dev/shm is an error here, not a SIGBUS later
            for buffer in layout:
                for file, dtype, shape in buffer.values():
                    _reserve(file, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        except OSError:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._maps = [_open(b, "r+") for b in layout]
        own = pool is None
        pool = ReaderPool(1) if own else pool
        self._proc, self._id = pool._assign()
        self._failed = ""  # a failed read's message: the buffer it was writing is not to be used
        self._pending = True  # until the reader has mapped the buffers
        self._finalize = weakref.finalize(self, _release, self._proc, self._id, self._dir, pool if own else None)
        self._send(f"open {self._id} {json.dumps({'path': self.path, 'layout': layout})}")
        self.wait()
        # Both processes have the buffers mapped: their files can go, so nothing is left behind
        # whichever way either process ends.
        shutil.rmtree(self._dir, ignore_errors=True)

    def _send(self, line: str) -> None:
        try:
            self._proc.send(line)
        except (BrokenPipeError, OSError):
            raise RuntimeError(f"{self.path}: the reading process died (exit code {self._proc.popen.poll()})") from None

    def request(self, buffer: int, start: int, stop: int) -> None:
        assert not self._pending, "one request at a time"
        if self._failed:
            raise DatasetError(self._failed)
        assert 0 <= stop - start <= self.rows
        self._send(f"read {self._id} {buffer} {start} {stop}")
        self._pending = True

    def ready(self) -> bool:
        """Whether the request in flight has finished (never waits)."""
        return self._pending and self._proc.has_reply(self._id)

    def wait(self) -> None:
        """Wait for the request in flight; a failed read raises here, naming the dataset."""
        if self._failed:
            raise DatasetError(self._failed)
        if not self._pending:
            return
        reply = self._proc.reply(self._id)  # an interruption here leaves it pending
        self._pending = False
        if reply is None:
            self._failed = f"{self.path}: the reading process died (exit code {self._proc.exit_code()})"
        elif reply != "ok":
            self._failed = f"{self.path}: reading a stretch failed: {reply.removeprefix(f'{self.path}: ')}"
        if self._failed:
            raise DatasetError(self._failed)

    def views(self, buffer: int, rows: int) -> dict[str, np.ndarray]:
        """The first ``rows`` rows of every field in ``buffer`` (plain arrays over the shared memory)."""
        return {f: np.asarray(m[:rows]) for f, m in self._maps[buffer].items()}

    def close(self) -> None:
        """Release the buffers here and in the reading process (the caller must drop its views too)."""
        self._maps = []
        self._finalize()


def _reserve(file: str, nbytes: int) -> None:
    """Create ``file`` with ``nbytes`` allocated (not a sparse file that a full disk would kill later)."""
    fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, nbytes)
            except OSError as exc:
                raise OSError(f"{file}: cannot reserve {nbytes / 2**20:.0f} MiB for stream buffers ({exc.strerror})") from None
        else:
            os.ftruncate(fd, nbytes)
    finally:
        os.close(fd)


def _open(buffer: dict[str, Any], mode: str) -> dict[str, np.memmap]:
    return {f: np.memmap(file, dtype=d, mode=mode, shape=tuple(shape)) for f, (file, d, shape) in buffer.items()}


def _release(proc: _Process, ident: str, directory: Path, own: ReaderPool | None) -> None:
    """A reader's end: the reading process drops the dataset and its buffers; a pool of its own stops."""
    proc.datasets -= 1
    try:
        proc.send(f"close {ident}")
    except (BrokenPipeError, OSError, ValueError):
        pass
    shutil.rmtree(directory, ignore_errors=True)
    if own is not None:
        own.close()


def _shutdown(procs: list[_Process]) -> None:
    for proc in procs:
        try:
            proc.popen.stdin.close()  # the reader exits at the end of its input
        except OSError:
            pass
    for proc in procs:
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
        if proc.popen.stdout is not None:
            proc.popen.stdout.close()


def _serve() -> None:
    """The reading process: ``open ID JSON``, ``read ID BUFFER START STOP`` and ``close ID`` lines in;
    one line ``ID ok`` or ``ID <the error>`` out for each open and read."""
    # Ctrl-C or a SIGTERM sent to the whole process group is the training process's to handle; this
    # process ends when its input does, which is also when the training process has gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    served: dict[str, tuple[dict[str, Any], list[dict[str, np.memmap]]]] = {}
    for line in sys.stdin:
        op, ident, rest = (line.rstrip("\n").split(" ", 2) + [""])[:3]
        if op == "close":
            served.pop(ident, None)
            continue
        reply = "ok"
        if op == "open":
            try:
                config = json.loads(rest)
                ds = Dataset(config["path"])
                layout = config["layout"]
                served[ident] = ({f: ds.array(f) for f in layout[0]}, [_open(b, "r+") for b in layout])
            except Exception as exc:  # noqa: BLE001 - reported to the training process, which raises it
                reply = f"cannot open it for reading: {exc!r}"
        elif op == "read":
            buffer, start, stop = map(int, rest.split())
            field = ""
            try:
                arrays, maps = served[ident]
                for field, array in arrays.items():
                    maps[buffer][field][: stop - start] = array[start:stop]
            except Exception as exc:  # noqa: BLE001 - reported to the training process, which raises it
                reply = str(exc) if isinstance(exc, DatasetError) else f"array {field!r}, steps {start}..{stop - 1}: {exc!r}"
        sys.stdout.write(f"{ident} " + reply.replace("\n", " ") + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
