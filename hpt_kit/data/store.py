"""The on-disk dataset: one zarr v3 group per converted dataset (format version 1).

Layout::

    NAME.zarr/
        state           (T, state_dim) float32      time-major, all episodes back to back
        action          (T, action_dim) float32
        image           (T, views, H, W, C) uint8   only if the spec declares images
        image_features  (T, views, tokens, C) float32  the spec records the encoder if the kit computed them
        language        (T, tokens, C) float32
        episode_ends    (N,) int64                  exclusive end index of every episode
    attributes: format, format_version, embodiment, spec, stats, num_episodes, num_steps, notes,
                kit_version, created

Writes go to a hidden temporary folder beside the target and are renamed into place only when every
episode was validated and written: an interrupted or failed conversion leaves no half dataset.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

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
CHUNK_BYTES = 1 << 20  # ~1 MiB per chunk along time: small enough to read windows, big enough to compress
FLUSH_ROWS = 4096  # buffered steps per append


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

    def update(self, ep: Episode) -> None:
        s = ep[STATE].astype(np.float64)
        self.n += len(s)
        self.s1 += s.sum(0)
        self.s2 += (s * s).sum(0)
        self.amin = np.minimum(self.amin, ep[ACTION].min(0))
        self.amax = np.maximum(self.amax, ep[ACTION].max(0))

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
    from hpt_kit.core.version import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite to replace it")
    if path.exists():
        Dataset(path)  # only a dataset is ever replaced: anything else raises DatasetError, untouched
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    shapes = episode_field_shapes(spec)
    try:
        root = zarr.open_group(store=str(tmp), mode="w-", zarr_format=3)
        arrays = {}
        for fname, step_shape in shapes.items():
            dtype = np.dtype(EPISODE_DTYPES.get(fname, np.float32))
            arrays[fname] = root.create_array(
                fname,
                shape=(0, *step_shape),
                chunks=(_chunk_rows(step_shape, dtype.itemsize), *step_shape),
                dtype=dtype,
            )
        stats = RunningStats(spec.observation.state_dim, spec.action.dim)
        buffers: dict[str, list[np.ndarray]] = {f: [] for f in shapes}
        buffered = 0
        ends: list[int] = []
        total = 0
        for i, raw in enumerate(episodes):
            ep = validate_episode(spec, i, raw)
            stats.update(ep)
            steps = len(ep[ACTION])
            total += steps
            ends.append(total)
            for f in shapes:
                buffers[f].append(ep[f])
            buffered += steps
            if buffered >= FLUSH_ROWS:
                _flush(arrays, buffers)
                buffered = 0
            if on_episode is not None:
                on_episode(i, steps)
        _flush(arrays, buffers)
        if not ends:
            raise SpecError(f"embodiment {spec.name!r}: conversion produced no episodes")
        root.create_array(EPISODE_ENDS, data=np.asarray(ends, dtype=np.int64))
        root.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "embodiment": spec.name,
                "spec": (final_spec(stats.result(), np.diff(ends, prepend=0)) if final_spec else spec).to_dict(),
                "stats": stats.result(),
                "num_episodes": len(ends),
                "num_steps": total,
                "notes": _jsonable(dict(notes or {})),
                "kit_version": __version__,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            }
        )
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _flush(arrays: Mapping[str, Any], buffers: dict[str, list[np.ndarray]]) -> None:
    for f, parts in buffers.items():
        if parts:
            arrays[f].append(np.concatenate(parts, axis=0), axis=0)
            parts.clear()


def _replace(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` to ``path``; an existing ``path`` is removed only after the move."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


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
    """A converted dataset opened for reading. Arrays are read lazily, per field."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
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
        self.episode_ends = np.asarray(self._root[EPISODE_ENDS][:], dtype=np.int64)
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

    def array(self, field: str) -> Any:
        """The lazy zarr array of one field."""
        if field not in self._root:
            raise DatasetError(f"{self.path}: array {field!r} is missing")
        return self._root[field]

    def load(self, field: str) -> np.ndarray:
        return np.asarray(self.array(field)[:])

    def episode(self, index: int) -> Episode:
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"{self.path}: episode {index} out of range (0..{self.num_episodes - 1})")
        start, end = int(self.episode_starts[index]), int(self.episode_ends[index])
        return {f: np.asarray(self.array(f)[start:end]) for f in self.fields()}
