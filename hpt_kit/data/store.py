"""The on-disk dataset: one zarr v3 group per converted dataset (format version 1).

Layout::

    NAME.zarr/
        state           (T, state_dim) float32      time-major, all episodes back to back
        action          (T, action_dim) float32
        image           (T, views, H, W, C) uint8   only if the spec declares images
        image_features  (T, views, tokens, C) float32  the spec records the encoder if the kit computed them
        language        (T, tokens, C) float32
        episode_ends    (N,) int64                  exclusive end index of every episode
        episode_moments (N, 2*state_dim + 2*action_dim) float64  each episode's state sums, sums of
                                                    squares, action minima and maxima (datasets written
                                                    before it lack it), so statistics over some
                                                    episodes need no pass over their steps
    attributes: format, format_version, embodiment, spec, stats, moments (the raw sums behind stats),
                num_episodes, num_steps, notes, kit_version, created, checksums

A dataset may also be a folder of such stores (shards) with a ``manifest.json``
(:mod:`hpt_kit.data.shards`); :class:`Dataset` opens it as one dataset.

Writes go to a hidden temporary folder beside the target and are renamed into place only when every
episode was validated and written: an interrupted or failed conversion leaves no half dataset. A
writer holds the path's lock (``.NAME.zarr.lock``) throughout, so two conversions to one path never
race; if a replacement was cut between its two renames, the next writer or reader puts the complete
dataset back in place.

Integrity (``checksums = "crc32c"``): every chunk of every array ends with a CRC-32C of its
compressed bytes (zarr's ``crc32c`` codec), checked whenever the chunk is read, and every chunk is
written even when it holds only zeros, so a dataset whose chunk files are not all present is refused
when it is opened instead of reading the missing ones as zeros. Datasets written before carry no
``checksums`` attribute and are read as they are.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from hpt_kit.core.lock import LockError, dataset_lock
from hpt_kit.core.spec import (
    ACTION,
    EPISODE_DTYPES,
    STATE,
    EmbodimentData,
    Episode,
    SpecError,
    episode_field_shapes,
    spec_from_dict,
    validate_episode,
)

FORMAT = "hpt-kit-dataset"
FORMAT_VERSION = 1
EPISODE_ENDS = "episode_ends"
EPISODE_MOMENTS = "episode_moments"
CHUNK_BYTES = 1 << 20  # ~1 MiB per chunk along time: small enough to read windows, big enough to compress
FLUSH_BYTES = 16 << 20  # buffered bytes per array before an append, in whole chunks (bounds memory)
CHECKSUMS = "crc32c"

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file and the key."""


def _chunk_rows(step_shape: tuple[int, ...], itemsize: int) -> int:
    row = max(1, math.prod(step_shape) * itemsize)
    return max(1, min(1 << 16, CHUNK_BYTES // row))


class RunningStats:
    """Running normaliser statistics: state mean/std, action min/max (the format every dataset,
    model and checkpoint carries)."""

    def __init__(self, state_dim: int, action_dim: int):
        self.n = 0
        self.s1 = np.zeros(state_dim)
        self.s2 = np.zeros(state_dim)
        self.amin = np.full(action_dim, np.inf)
        self.amax = np.full(action_dim, -np.inf)

    def update(self, ep: Episode) -> np.ndarray:
        """Add one episode's (or slab's) steps; returns their own raw moments as one row
        (state sums, sums of squares, action minima, maxima: the layout of ``episode_moments``)."""
        s = ep[STATE].astype(np.float64)
        row = np.concatenate([s.sum(0), (s * s).sum(0), ep[ACTION].min(0), ep[ACTION].max(0)])
        self.add_rows(row[None], len(s))
        return row

    def add_rows(self, rows: np.ndarray, steps: int) -> None:
        """Add rows of ``episode_moments`` that together cover ``steps`` steps."""
        S = len(self.s1)
        self.n += int(steps)
        self.s1 += rows[:, :S].sum(0)
        self.s2 += rows[:, S : 2 * S].sum(0)
        self.amin = np.minimum(self.amin, rows[:, 2 * S : 2 * S + len(self.amin)].min(0))
        self.amax = np.maximum(self.amax, rows[:, 2 * S + len(self.amin) :].max(0))

    def moments(self) -> dict[str, Any]:
        """The raw sums the statistics come from (stored as the dataset's ``moments``): statistics
        over several datasets are merged from these exactly, not averaged from their results."""
        return {"count": self.n, "state_sum": self.s1.tolist(), "state_sumsq": self.s2.tolist(),
                "action_min": self.amin.tolist(), "action_max": self.amax.tolist()}

    @classmethod
    def merged(cls, parts: Iterable[Mapping[str, Any]]) -> RunningStats:
        """The statistics of several datasets' steps together, from their :meth:`moments`."""
        parts = list(parts)
        out = cls(len(parts[0]["state_sum"]), len(parts[0]["action_min"]))
        for part in parts:
            out.n += int(part["count"])
            out.s1 += np.asarray(part["state_sum"], dtype=np.float64)
            out.s2 += np.asarray(part["state_sumsq"], dtype=np.float64)
            out.amin = np.minimum(out.amin, np.asarray(part["action_min"], dtype=np.float64))
            out.amax = np.maximum(out.amax, np.asarray(part["action_max"], dtype=np.float64))
        return out

    def result(self) -> dict[str, dict[str, list[float]]]:
        mean = self.s1 / self.n
        std = np.sqrt(np.maximum(self.s2 / self.n - mean * mean, 0.0))
        return {
            "state": {"mean": mean.tolist(), "std": std.tolist()},
            "action": {"min": self.amin.tolist(), "max": self.amax.tolist()},
        }


def write_dataset(
    path: str | Path,
    spec: Any,
    episodes: Iterable[Mapping[str, Any]],
    notes: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    on_episode: Any = None,
    final_spec: Any = None,
) -> Path:
    """Validate and write ``episodes`` of embodiment ``spec`` to ``path``, atomically.

    ``notes`` is read after the episodes are exhausted, so a plugin can fill it while converting.
    ``on_episode(i, steps)`` is called after each episode (progress bars). ``final_spec(stats,
    lengths)``, if given, returns the spec to store, from what only the whole data tells (an imported
    dataset's action bounds and longest episode).
    """
    path = Path(path)
    with replacing(path, overwrite):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            _write(tmp, spec, episodes, notes, on_episode, final_spec)
            _replace(tmp, path)
        except OSError as exc:  # a full disk: say where, leave nothing behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise DatasetError(f"{path}: cannot write the dataset ({exc.strerror or exc}); nothing was changed") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


def _write(tmp: Path, spec: Any, episodes: Iterable[Mapping[str, Any]], notes, on_episode, final_spec) -> None:
    from hpt_kit.core.version import __version__

    shapes = episode_field_shapes(spec)
    root = zarr.open_group(store=str(tmp), mode="w-", zarr_format=3)
    buffers = {}
    for fname, step_shape in shapes.items():
        dtype = np.dtype(EPISODE_DTYPES.get(fname, np.float32))
        chunk_rows = _chunk_rows(step_shape, dtype.itemsize)
        array = root.create_array(
            fname,
            shape=(0, *step_shape),
            chunks=(chunk_rows, *step_shape),
            dtype=dtype,
            compressors=(ZstdCodec(level=0), Crc32cCodec()),
            config={"write_empty_chunks": True},  # every chunk on disk: a missing file is damage
        )
        buffers[fname] = _Appender(array, chunk_rows, math.prod(step_shape) * dtype.itemsize)
    stats = RunningStats(spec.observation.state_dim, spec.action.dim)
    ends: list[int] = []
    moments: list[np.ndarray] = []
    total = 0
    for i, raw in enumerate(episodes):
        ep = validate_episode(spec, i, raw)
        moments.append(stats.update(ep))
        steps = len(ep[ACTION])
        total += steps
        ends.append(total)
        for f in shapes:
            buffers[f].add(ep[f])
        if on_episode is not None:
            on_episode(i, steps)
    for buffer in buffers.values():
        buffer.flush()
    if not ends:
        raise SpecError(f"embodiment {spec.name!r}: conversion produced no episodes")
    root.create_array(
        EPISODE_ENDS, data=np.asarray(ends, dtype=np.int64), compressors=(ZstdCodec(level=0), Crc32cCodec())
    )
    root.create_array(EPISODE_MOMENTS, data=np.stack(moments), compressors=(ZstdCodec(level=0), Crc32cCodec()),
                      config={"write_empty_chunks": True})
    root.attrs.update(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "embodiment": spec.name,
            "spec": (final_spec(stats.result(), np.diff(ends, prepend=0)) if final_spec else spec).to_dict(),
            "stats": stats.result(),
            "moments": stats.moments(),
            "num_episodes": len(ends),
            "num_steps": total,
            "notes": _jsonable(dict(notes or {})),
            "kit_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "checksums": CHECKSUMS,
        }
    )


KEEP_VIEW_FACTOR = 4  # a buffered view whose buffer is over this many times its size (and over
KEEP_VIEW_BYTES = 1 << 20  # this much) is copied, so the writer never pins an importer's large reads


def _kept_alive(part: np.ndarray) -> int:
    """Bytes of the buffer that ``part`` keeps alive: the last base under a view; an Arrow array
    (``to_numpy`` without a copy) counts its buffers whole, as a slice holds them; any other object
    with the buffer protocol (an Arrow buffer, an ``mmap``) its size."""
    base: Any = part
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, np.ndarray):
        return base.nbytes
    buffers = getattr(base, "buffers", None)  # duck-typed: the writer does not import pyarrow
    if callable(buffers):
        try:
            return sum(b.size for b in buffers() if b is not None)
        except (TypeError, AttributeError):
            pass
    try:
        return memoryview(base).nbytes
    except TypeError:
        return part.nbytes


class _Appender:
    """One array's steps, buffered and appended in whole chunks of about ``FLUSH_BYTES``: memory
    stays bounded whatever the frame size (a fixed count of steps held 0.5 GB of three small camera
    views), and no chunk is written twice (an append that ends inside a chunk rewrites it). A part
    that is a small view into a large buffer is buffered as a copy (:func:`_kept_alive`)."""

    def __init__(self, array: Any, chunk_rows: int, row_bytes: int):
        self.array = array
        self.chunk_rows = chunk_rows
        self.at = chunk_rows * max(1, FLUSH_BYTES // max(1, chunk_rows * row_bytes))
        self.parts: list[np.ndarray] = []
        self.rows = 0

    def add(self, part: np.ndarray) -> None:
        if part.base is not None and _kept_alive(part) > max(KEEP_VIEW_FACTOR * part.nbytes, KEEP_VIEW_BYTES):
            part = part.copy()  # a few rows of a large buffer: buffering the view would keep all of it
        self.parts.append(part)
        self.rows += len(part)
        if self.rows >= self.at:
            self.flush(whole_chunks=True)

    def flush(self, whole_chunks: bool = False) -> None:
        """Append what is buffered (``whole_chunks``: all but the rows past the last whole chunk)."""
        n = self.rows - self.rows % self.chunk_rows if whole_chunks else self.rows
        if n == 0:
            return
        block = np.concatenate(self.parts, axis=0) if len(self.parts) > 1 else self.parts[0]
        self.array.append(block[:n], axis=0)
        rest = block[n:]
        self.parts = [rest.copy()] if len(rest) else []  # a copy: the block is not kept for a few rows
        self.rows = len(rest)


@contextlib.contextmanager
def replacing(path: Path, overwrite: bool) -> Iterator[None]:
    """Held while a dataset is written to ``path``: its lock, a crashed write's leftovers recovered,
    an existing ``path`` refused unless ``overwrite``, and then replaced only if it is a dataset
    (anything else raises :class:`DatasetError`, untouched)."""
    with dataset_lock(path):
        recover(path, locked=True)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
        if path.exists():
            Dataset(path, verify=False)
        yield


def _replace(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` to ``path``; an existing ``path`` is removed only after the move.
    Between the two renames ``path`` is missing: :func:`recover` finishes the move after a crash."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def recover(path: str | Path, locked: bool = False) -> list[str]:
    """Finish or undo what an interrupted write left beside ``path``; returns one line per change.

    A replacement cut between its renames leaves ``path`` missing, the previous dataset under
    ``.NAME.old-*`` and the new, complete one under ``.NAME.tmp-*``: the complete new one is moved in
    (the old one if the new one does not open). Temporary folders of writers that are gone are
    removed. Takes the path's lock unless the caller holds it; a live writer's files are left alone.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    tmps = sorted(path.parent.glob(f".{path.name}.tmp-*"))
    if not olds and not tmps:
        return []
    if not locked:
        try:
            with dataset_lock(path):
                return recover(path, locked=True)
        except LockError:
            return []  # a writer is at work; it finishes or recovers itself
    changes: list[str] = []
    if not path.exists() and olds:
        complete = [t for t in tmps if _opens(t)]
        chosen = complete[-1] if complete else olds[-1]
        os.replace(chosen, path)
        changes.append(f"{path}: restored from {chosen.name}, left by a replacement that was interrupted")
    for leftover in [*path.parent.glob(f".{path.name}.old-*"), *path.parent.glob(f".{path.name}.tmp-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
        changes.append(f"{path}: removed {leftover.name}, left by an interrupted write")
    for change in changes:
        log.warning("%s", change)
    return changes


def _opens(path: Path) -> bool:
    try:
        Dataset(path, recovering=False)
    except DatasetError:
        return False
    return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class Dataset:
    """A converted dataset opened for reading. Arrays are read lazily, per field; a chunk that fails
    its checksum or cannot be decoded is a :class:`DatasetError` naming the file, array and steps.

    ``verify``: check that every chunk file is present (datasets with checksums); ``recovering``:
    first put back a dataset left between the renames of an interrupted replacement."""

    def __new__(cls, path: str | Path, *args: Any, **kwargs: Any) -> Dataset:
        """A folder of shards with a manifest opens as one :class:`~hpt_kit.data.shards.ShardedDataset`."""
        if cls is Dataset and (Path(path) / "manifest.json").is_file():
            from hpt_kit.data.shards import ShardedDataset

            return super().__new__(ShardedDataset)
        return super().__new__(cls)

    def __init__(self, path: str | Path, verify: bool = True, recovering: bool = True):
        self.path = Path(path)
        if recovering and not self.path.exists():
            recover(self.path)
        if not self.path.exists():
            raise DatasetError(f"{self.path}: no such dataset (convert it with `hpt-kit convert`)")
        try:
            self._root = zarr.open_group(store=str(self.path), mode="r", zarr_format=3)
        except Exception as exc:  # noqa: BLE001 - zarr raises several types for a bad store
            raise DatasetError(f"{self.path}: not a zarr v3 dataset ({exc})") from exc
        attrs = dict(self._root.attrs)
        if attrs.get("format") != FORMAT:
            raise DatasetError(f"{self.path}: attribute 'format' is {attrs.get('format')!r}, expected {FORMAT!r}")
        version = attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetError(
                f"{self.path}: format_version {version!r} is not supported (this kit reads {FORMAT_VERSION})"
            )
        for key in ("embodiment", "spec", "stats", "num_episodes", "num_steps"):
            if key not in attrs:
                raise DatasetError(f"{self.path}: attribute {key!r} is missing")
        self.attrs = attrs
        try:
            self.spec: EmbodimentData = spec_from_dict(attrs["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{self.path}: attribute 'spec' is malformed ({exc!r})") from exc
        self.name: str = attrs["embodiment"]
        self.stats: dict = attrs["stats"]
        self.notes: dict = attrs.get("notes", {})
        for key in (*episode_field_shapes(self.spec), EPISODE_ENDS):
            if key not in self._root:
                raise DatasetError(f"{self.path}: array {key!r} is missing")
        self.checksums = attrs.get("checksums")
        if verify and self.checksums:
            for key in (*episode_field_shapes(self.spec), EPISODE_ENDS, EPISODE_MOMENTS):
                if key in self._root:  # episode_moments: absent from datasets written before it
                    self._check_chunks(key)
        self.episode_ends = np.asarray(self.array(EPISODE_ENDS)[:], dtype=np.int64)
        if len(self.episode_ends) != attrs["num_episodes"] or (
            len(self.episode_ends) and int(self.episode_ends[-1]) != attrs["num_steps"]
        ):
            raise DatasetError(f"{self.path}: 'episode_ends' disagrees with num_episodes/num_steps")

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def num_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    def fields(self) -> list[str]:
        return list(episode_field_shapes(self.spec))

    def episode_moments(self) -> np.ndarray | None:
        """Every episode's raw moments, (N, 2*state_dim + 2*action_dim) float64 (the layout of
        :meth:`RunningStats.update`); None for a dataset written before they were stored. A sharded
        dataset gives its shards' rows in order."""
        shards = getattr(self, "shards", None)
        if shards is not None:
            parts = [shard.episode_moments() for shard in shards]
            return None if any(p is None for p in parts) else np.concatenate(parts)
        if EPISODE_MOMENTS not in self._root:
            return None
        rows = np.asarray(self.array(EPISODE_MOMENTS)[:], dtype=np.float64)
        width = 2 * self.spec.observation.state_dim + 2 * self.spec.action.dim
        if rows.shape != (self.num_episodes, width):
            raise DatasetError(f"{self.path}: array {EPISODE_MOMENTS!r} has shape {rows.shape}, expected ({self.num_episodes}, {width})")
        return rows

    def _check_chunks(self, field: str) -> None:
        """Every chunk of ``field`` is on disk (the writer writes empty chunks too)."""
        array = self._root[field]
        if 0 in array.chunks:  # a zero-width field (a state-free spec's state) holds no values, so no chunks
            return
        grid = [math.ceil(n / c) for n, c in zip(array.shape, array.chunks)]
        base = self.path / field / "c"
        for index in np.ndindex(*grid):
            chunk = base.joinpath(*map(str, index))
            if not chunk.is_file():
                rows = array.chunks[0]
                raise DatasetError(
                    f"{self.path}: array {field!r} chunk {'/'.join(map(str, index))} (steps {index[0] * rows}.."
                    f"{min(array.shape[0], (index[0] + 1) * rows) - 1}) is missing: the dataset is damaged; convert or import it again"
                )

    def array(self, field: str) -> Any:
        """The lazy array of one field: a zarr array whose reads name the dataset when they fail."""
        if field not in self._root:
            raise DatasetError(f"{self.path}: array {field!r} is missing")
        return CheckedArray(self._root[field], self.path, field)

    def load(self, field: str) -> np.ndarray:
        """One field whole, in memory; a float field holding NaN or Inf is refused, naming the
        episode and step (conversion never writes one, so the file was changed since)."""
        data = np.asarray(self.array(field)[:])
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            self._nonfinite(field, data)
        return data

    def _nonfinite(self, field: str, data: np.ndarray) -> None:
        row = int(np.flatnonzero(~np.isfinite(data.reshape(len(data), -1)).all(axis=1))[0])
        episode = int(np.searchsorted(self.episode_ends, row, side="right"))
        step = row - int(self.episode_starts[episode])
        raise DatasetError(
            f"{self.path}: array {field!r} holds a non-finite value at episode {episode}, step {step} (row {row}); "
            "the dataset was changed after it was written; convert or import it again"
        )

    def episode(self, index: int) -> Episode:
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"{self.path}: episode {index} out of range (0..{self.num_episodes - 1})")
        start, end = int(self.episode_starts[index]), int(self.episode_ends[index])
        return {f: np.asarray(self.array(f)[start:end]) for f in self.fields()}


class CheckedArray:
    """A zarr array whose failed reads (a checksum mismatch, a chunk that does not decode) raise
    :class:`DatasetError` naming the dataset, the array and the rows asked for. Everything else is
    the zarr array's."""

    def __init__(self, array: Any, path: Path, field: str):
        self._array, self._path, self._field = array, path, field

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._array[key]
        except Exception as exc:  # noqa: BLE001 - zarr and its codecs raise many types for damaged chunks
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DatasetError(
                f"{self._path}: array {self._field!r}, rows {_describe_key(key)}: cannot be read ({type(exc).__name__}: {first}); "
                "the dataset is damaged; convert or import it again"
            ) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._array, name)

    def __len__(self) -> int:
        return len(self._array)


def _describe_key(key: Any) -> str:
    first = key[0] if isinstance(key, tuple) else key
    if isinstance(first, slice):
        return f"{first.start or 0}..{'end' if first.stop is None else first.stop - 1}"
    return str(first)
