"""A LeRobot dataset's metadata: ``meta/info.json``, the episode table and the tasks, for the two
on-disk layouts.

- v2.0 / v2.1: one parquet file and one mp4 per camera for each episode, at ``data_path`` and
  ``video_path`` filled with ``episode_chunk = episode_index // chunks_size``; episodes in
  ``meta/episodes.jsonl``, tasks in ``meta/tasks.jsonl``.
- v3.0: files holding many episodes; ``meta/episodes/chunk-*/file-*.parquet`` gives each episode's
  rows (``dataset_from_index``/``dataset_to_index``, global row numbers) in data file
  ``data/chunk_index``/``data/file_index``, and for each camera its mp4 and the span
  ``from_timestamp``/``to_timestamp`` it occupies there; tasks in ``meta/tasks.parquet``.

Everything here reads metadata only; rows and frames are read by ``reading``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hpt_kit.core.importer import ImportSourceError

INFO = "meta/info.json"
VIDEO = "video"
IMAGE = "image"
STRING = "string"
CAMERA_DTYPES = (VIDEO, IMAGE)
NUMERIC_PREFIXES = ("float", "int", "uint", "bool")
SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
CHANNEL_NAMES = ("channel", "channels", "c", "rgb")


class EpisodeProblem(Exception):
    """One episode cannot be read (a missing file, frames off the timestamps, a ragged vector); the
    message names the file, key and episode. Turned into ``SourceEpisode(problem=...)``."""


@dataclass(frozen=True)
class VideoRef:
    """Where one camera's frames of one episode are: the file and the span it occupies there (v3
    files hold several episodes one after the other; a v2 file is the episode's own, from 0).
    ``problem`` says why the metadata cannot locate them (the camera's columns missing in v3)."""

    path: Path
    start: float = 0.0
    stop: float | None = None
    problem: str | None = None


@dataclass(frozen=True)
class EpisodeRef:
    """One episode as the metadata locates it. ``rows`` is its row range inside ``data`` (v3), or
    ``None`` when the file is the episode's own (v2)."""

    index: int
    length: int
    tasks: tuple[str, ...]
    data: Path
    rows: tuple[int, int] | None
    videos: Mapping[str, VideoRef] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A dataset's metadata, read once; the episode table is walked lazily by ``episode_refs``."""

    root: Path
    info: Mapping[str, Any]
    version: str
    tasks: tuple[str, ...]

    @property
    def features(self) -> Mapping[str, Mapping[str, Any]]:
        return self.info["features"]

    @property
    def fps(self) -> float:
        return float(self.info.get("fps") or 0.0)

    @property
    def video_keys(self) -> tuple[str, ...]:
        return tuple(k for k, ft in self.features.items() if ft.get("dtype") == VIDEO)

    def camera_fps(self, key: str) -> float:
        """A camera's own rate: ``info.video.fps`` where the metadata gives it, else the dataset's."""
        ft = self.features[key]
        fps = (ft.get("info") or {}).get("video.fps") or (ft.get("video_info") or {}).get("video.fps")
        return float(fps or self.fps)

    def episode_refs(self) -> Iterator[EpisodeRef]:
        if self.version.startswith("v2"):
            return _v2_refs(self)
        return _v3_refs(self)


def open_source(root: Path) -> Source:
    """The metadata of the dataset at ``root``; a whole-source problem raises ImportSourceError."""
    info = read_info(root)
    version = str(info.get("codebase_version", ""))
    if version not in SUPPORTED_VERSIONS:
        raise ImportSourceError(
            f"{root / INFO}: codebase_version {version!r} is not supported (supported: "
            f"{', '.join(SUPPORTED_VERSIONS)}); convert older datasets with LeRobot's converter first"
        )
    features = info.get("features")
    if not isinstance(features, dict) or not features:
        raise ImportSourceError(f"{root / INFO}: no 'features' mapping")
    if not isinstance(info.get("data_path"), str):
        raise ImportSourceError(f"{root / INFO}: no 'data_path' template")
    if any(ft.get("dtype") == VIDEO for ft in features.values()) and not isinstance(info.get("video_path"), str):
        raise ImportSourceError(f"{root / INFO}: video features but no 'video_path' template")
    tasks = _v2_tasks(root) if version.startswith("v2") else _v3_tasks(root)
    return Source(root, info, version, tasks)


def read_info(root: Path) -> dict[str, Any]:
    path = root / INFO
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ImportSourceError(f"{path}: not found; a LeRobot dataset has meta/info.json") from None
    except (OSError, ValueError) as exc:
        raise ImportSourceError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ImportSourceError(f"{path}: not a JSON object")
    return info


def image_shape(key: str, ft: Mapping[str, Any]) -> tuple[int, int, int]:
    """A camera's (height, width, 3): from ``info.video.height/width`` where given, else from
    ``shape`` read through ``names`` (LeRobot writes both (H, W, C) and (C, H, W))."""
    vinfo = ft.get("info") or {}
    if vinfo.get("video.height") and vinfo.get("video.width"):
        return int(vinfo["video.height"]), int(vinfo["video.width"]), 3
    shape = [int(s) for s in ft.get("shape", ())]
    if len(shape) != 3:
        raise ImportSourceError(f"{INFO}: camera {key!r} has shape {shape}; expected 3 dimensions")
    names = [str(n).lower() for n in (ft.get("names") or [])]
    if names:
        channels_first = names[0] in CHANNEL_NAMES
    else:
        channels_first = shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4)
    height, width = (shape[1], shape[2]) if channels_first else (shape[0], shape[1])
    return height, width, 3


def vector_width(ft: Mapping[str, Any]) -> int:
    """Numbers per step of a numeric feature: its shape flattened ((1,) for a scalar)."""
    return max(1, math.prod(int(s) for s in ft.get("shape") or (1,)))


def vector_names(ft: Mapping[str, Any]) -> tuple[str, ...]:
    """A numeric feature's per-value names from ``names``: a list (LeRobot v2.1 and v3.0) or a
    one-entry mapping such as ``{"motors": [...]}`` (v2.0); empty when absent or when their count
    does not match the width."""
    names = ft.get("names")
    if isinstance(names, Mapping) and len(names) == 1:
        names = next(iter(names.values()))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return ()
    return tuple(names) if len(names) == vector_width(ft) else ()


def _fill(template: str, where: Path, **values: Any) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ImportSourceError(f"{where}: path template {template!r} cannot be filled ({exc!r})") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        raise ImportSourceError(f"{path}: not found") from None
    except (OSError, ValueError) as exc:
        raise ImportSourceError(f"{path}: cannot be read as JSON lines ({exc})") from None


def _v2_tasks(root: Path) -> tuple[str, ...]:
    path = root / "meta/tasks.jsonl"
    if not path.exists():
        return ()
    rows = sorted(_read_jsonl(path), key=lambda r: int(r.get("task_index", 0)))
    return tuple(str(r["task"]) for r in rows if "task" in r)


def _v2_refs(src: Source) -> Iterator[EpisodeRef]:
    path = src.root / "meta/episodes.jsonl"
    rows = sorted(_read_jsonl(path), key=lambda r: int(r["episode_index"]))
    chunk_size = int(src.info.get("chunks_size") or 1000)
    total = int(src.info.get("total_episodes") or len(rows))
    for row in rows:
        ep = int(row["episode_index"])
        values = {"episode_chunk": ep // chunk_size, "episode_index": ep, "total_episodes": total}
        data = src.root / _fill(src.info["data_path"], path, **values)
        videos = {
            key: VideoRef(src.root / _fill(src.info["video_path"], path, video_key=key, **values))
            for key in src.video_keys
        }
        tasks = row.get("tasks") or []
        tasks = (tasks,) if isinstance(tasks, str) else tuple(str(t) for t in tasks)
        yield EpisodeRef(ep, int(row.get("length", 0)), tasks, data, None, videos)


def _v3_tasks(root: Path) -> tuple[str, ...]:
    """Task texts by task_index. LeRobot writes a pandas frame whose index is the text (stored as
    a column named ``task`` or ``__index_level_0__``) beside a ``task_index`` column."""
    path = root / "meta/tasks.parquet"
    if not path.exists():
        return ()
    table = pq.read_table(path)
    texts = [n for n in table.column_names if pa.types.is_string(table.schema.field(n).type)
             or pa.types.is_large_string(table.schema.field(n).type)]
    if "task_index" not in table.column_names or not texts:
        raise ImportSourceError(f"{path}: expected a task_index column and a task text column, got {table.column_names}")
    text = "task" if "task" in texts else texts[0]
    pairs = sorted(zip(table.column("task_index").to_pylist(), table.column(text).to_pylist()))
    return tuple(str(t) for _, t in pairs)


def _v3_episode_rows(root: Path) -> list[dict[str, Any]]:
    """Every episode's row of ``meta/episodes``, without the per-episode statistics columns."""
    files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise ImportSourceError(f"{root / 'meta/episodes'}: no chunk-*/file-*.parquet episode tables")
    rows: list[dict[str, Any]] = []
    for path in files:
        names = pq.read_schema(path).names
        columns = [n for n in names if not n.startswith("stats/")]
        need = {"episode_index", "data/chunk_index", "data/file_index", "dataset_from_index", "dataset_to_index"}
        if not need <= set(columns):
            raise ImportSourceError(f"{path}: missing columns {sorted(need - set(columns))}")
        rows.extend(pq.read_table(path, columns=columns).to_pylist())
    return sorted(rows, key=lambda r: int(r["episode_index"]))


def _v3_refs(src: Source) -> Iterator[EpisodeRef]:
    rows = _v3_episode_rows(src.root)
    where = src.root / "meta/episodes"
    # dataset_from_index counts rows over the whole dataset; a data file starts at its first episode.
    starts: dict[tuple[int, int], int] = {}
    for r in rows:
        key = (int(r["data/chunk_index"]), int(r["data/file_index"]))
        starts[key] = min(starts.get(key, int(r["dataset_from_index"])), int(r["dataset_from_index"]))
    for r in rows:
        chunk, file = int(r["data/chunk_index"]), int(r["data/file_index"])
        data = src.root / _fill(src.info["data_path"], where, chunk_index=chunk, file_index=file)
        first = int(r["dataset_from_index"]) - starts[(chunk, file)]
        rows_range = (first, first + int(r["dataset_to_index"]) - int(r["dataset_from_index"]))
        tasks = r.get("tasks") or []
        tasks = (tasks,) if isinstance(tasks, str) else tuple(str(t) for t in tasks)
        length = int(r.get("length") or rows_range[1] - rows_range[0])
        videos = {key: _v3_video(src, where, r, key) for key in src.video_keys}
        yield EpisodeRef(int(r["episode_index"]), length, tasks, data, rows_range, videos)


def _v3_video(src: Source, where: Path, row: Mapping[str, Any], key: str) -> VideoRef:
    cols = [f"videos/{key}/{n}" for n in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    missing = [c for c in cols if row.get(c) is None]
    if missing:
        problem = f"{where}: episode {row['episode_index']} has no {', '.join(missing)} for camera {key!r}"
        return VideoRef(where, problem=problem)
    chunk, file, start, stop = (row[c] for c in cols)
    path = src.root / _fill(src.info["video_path"], where, video_key=key, chunk_index=int(chunk), file_index=int(file))
    return VideoRef(path, float(start), float(stop))
