"""Reading stretches of a dataset in a separate process, into buffers both processes map.

Decoding zarr chunks holds the interpreter lock for much of the time it takes. Done by a thread of the
training process, it stalls batch assembly: on 2 cores the bench's sampler ran at about 20,000
samples/s with a reading thread beside it against 70,000 without one. A reading process has its own
interpreter. Its buffers are files in ``/dev/shm`` (memory) when that has room for them, otherwise in
the temporary directory; they are unlinked as soon as both processes have mapped them, so nothing is
left on disk however either process ends.

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


def _buffer_dir(nbytes: int) -> str | None:
    """``/dev/shm`` when it exists with room for ``nbytes`` and a margin, else the default temp dir."""
    try:
        if SHM.is_dir() and shutil.disk_usage(SHM).free > 2 * nbytes:
            return str(SHM)
    except OSError:
        pass
    return None


class StretchReader:
    """A process that copies rows ``start:stop`` of a dataset's fields into one of ``buffers`` buffers
    of ``rows`` rows each, one request at a time: :meth:`request`, then :meth:`wait` (or poll
    :meth:`ready`), then read the rows through :meth:`views`.

    The process is ``python -m hpt_kit.data.reader``, spoken to over its stdin and stdout: unlike
    multiprocessing's spawn it never re-imports the caller's main script, and unlike fork it does not
    inherit zarr's event-loop thread. It exits when its stdin closes, so it never outlives the caller.
    """

    def __init__(self, path: str | Path, fields: Mapping[str, tuple[np.dtype, tuple[int, ...]]], rows: int, buffers: int):
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
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "hpt_kit.data.reader", json.dumps({"path": self.path, "layout": layout})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._failed = ""  # a failed read's message: the buffer it was writing is not to be used
        self._pending = True  # until the reader has mapped the buffers
        self._finalize = weakref.finalize(self, _shutdown, self._proc, self._dir)
        self.wait()
        # Both processes have the buffers mapped: their files can go, so nothing is left behind
        # whichever way either process ends.
        shutil.rmtree(self._dir, ignore_errors=True)

    def request(self, buffer: int, start: int, stop: int) -> None:
        assert not self._pending, "one request at a time"
        if self._failed:
            raise DatasetError(self._failed)
        assert 0 <= stop - start <= self.rows
        try:
            self._proc.stdin.write(f"{buffer} {start} {stop}\n".encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise RuntimeError(f"{self.path}: the reading process died (exit code {self._proc.poll()})") from None
        self._pending = True

    def ready(self) -> bool:
        """Whether the request in flight has finished (never waits)."""
        return self._pending and bool(select.select([self._proc.stdout], [], [], 0)[0])

    def wait(self) -> None:
        """Wait for the request in flight; a failed read raises here, naming the dataset."""
        if self._failed:
            raise DatasetError(self._failed)
        if not self._pending:
            return
        reply = self._proc.stdout.readline().decode().rstrip("\n")  # an interruption here leaves it pending
        self._pending = False
        if not reply:
            self._failed = f"{self.path}: the reading process died (exit code {self._proc.wait()})"
        elif reply != "ok":
            self._failed = f"{self.path}: reading a stretch failed: {reply.removeprefix(f'{self.path}: ')}"
        if self._failed:
            raise DatasetError(self._failed)

    def views(self, buffer: int, rows: int) -> dict[str, np.ndarray]:
        """The first ``rows`` rows of every field in ``buffer`` (plain arrays over the shared memory)."""
        return {f: np.asarray(m[:rows]) for f, m in self._maps[buffer].items()}

    def close(self) -> None:
        """Stop the process and unmap the buffers (the caller must drop its views too)."""
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


def _shutdown(proc: subprocess.Popen, directory: Path) -> None:
    try:
        proc.stdin.close()  # the reader exits at the end of its input
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    shutil.rmtree(directory, ignore_errors=True)


def _serve(path: str, layout: list[dict[str, Any]]) -> None:
    """The reading process: one line ``buffer start stop`` in, one line ``ok`` or the error out."""
    # Ctrl-C or a SIGTERM sent to the whole process group is the training process's to handle; this
    # process ends when its input does, which is also when the training process has gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        ds = Dataset(path)
        arrays = {f: ds.array(f) for f in layout[0]}
        maps = [_open(b, "r+") for b in layout]
    except Exception as exc:  # noqa: BLE001 - reported to the training process, which raises it
        sys.stdout.write(f"cannot open it for reading: {exc!r}".replace("\n", " ") + "\n")
        sys.stdout.flush()
        return
    sys.stdout.write("ok\n")  # mapped
    sys.stdout.flush()
    for line in sys.stdin:
        buffer, start, stop = map(int, line.split())
        field, reply = "", "ok"
        try:
            for field, array in arrays.items():
                maps[buffer][field][: stop - start] = array[start:stop]
        except Exception as exc:  # noqa: BLE001 - reported to the training process, which raises it
            detail = str(exc) if isinstance(exc, DatasetError) else f"array {field!r}, steps {start}..{stop - 1}: {exc!r}"
            reply = detail.replace("\n", " ")
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    _serve(config["path"], config["layout"])
