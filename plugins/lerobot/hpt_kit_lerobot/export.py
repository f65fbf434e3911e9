"""The ``lerobot`` exporter: a kit dataset written as a LeRobot v3.0 dataset, in the layout LeRobot
0.4 writes (``codebase_version`` "v3.0"), with pyarrow and PyAV and without the lerobot package.

    meta/info.json                                  codebase_version, robot_type, totals, chunks_size,
                                                    data/video files_size_in_mb, fps, splits,
                                                    data_path, video_path, features
    meta/stats.json                                 min, max, mean, std, count of every feature
    meta/tasks.parquet                              task_index, indexed by the task text (pandas)
    meta/episodes/chunk-000/file-000.parquet        a row per episode: episode_index, tasks, length,
                                                    data/chunk_index, data/file_index,
                                                    dataset_from_index, dataset_to_index,
                                                    videos/<key>/{chunk_index, file_index,
                                                    from_timestamp, to_timestamp}, stats/<key>/<stat>,
                                                    meta/episodes/chunk_index, meta/episodes/file_index
    data/chunk-000/file-000.parquet                 observation.state, action (fixed-size float32
                                                    lists), [images,] timestamp, frame_index,
                                                    episode_index, index, task_index
    videos/<key>/chunk-000/file-000.mp4             each camera's episodes back to back

Files roll over as LeRobot's do: a new data file once one holds ``DATA_FILES_SIZE_IN_MB`` (in
memory), a new mp4 once one reaches ``VIDEO_FILES_SIZE_IN_MB`` on disk, a new chunk folder every
``CHUNKS_SIZE`` files. Cameras become ``observation.images.<view>``; the episode's instruction is its
task. Camera statistics are per channel, over every frame scaled to [0, 1], shaped (3, 1, 1) as
LeRobot stores them.

Videos are H.264 (libx264, yuv420p, CRF 23, a keyframe every 2 frames as LeRobot encodes). LeRobot 0.4
encodes AV1 by default; H.264 is chosen for compatibility: every FFmpeg build, browser and hardware
decoder plays it (the Hub's dataset viewer included), AV1 needs a recent decoder, and LeRobot decodes
either (``video.codec`` in ``info.json`` says which). Encoding and decoding speeds were similar. With
``cameras = "images"`` frames are PNG images inside the data rows instead (dtype ``image``: a struct
of ``bytes`` and ``path``, as Hugging Face ``datasets`` stores them): lossless, and larger.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from hpt_kit.core.exporter import IMAGES, ExportEpisode, ExportError, ExportOptions, ExportSource

NAME = "lerobot"
CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 500
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STATE_KEY, ACTION_KEY, CAMERA_PREFIX = "observation.state", "action", "observation.images."
INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
CODEC, ENCODER, PIX_FMT = "h264", "libx264", "yuv420p"
ENCODER_OPTIONS = {"crf": "23", "g": "2"}
CAMERA_NAMES = ["height", "width", "channels"]


class LeRobotExporter:
    """Writes LeRobot v3.0 datasets (``hpt-kit data export DATASET OUT --format lerobot``)."""

    name = NAME

    def export(self, source: ExportSource, episodes: Iterable[ExportEpisode], out: Path, options: ExportOptions) -> None:
        as_video = options.cameras != IMAGES
        height, width = source.frame_size
        if as_video and source.views and (height % 2 or width % 2):
            raise ExportError(
                f"{source.location}: frames are {height}x{width}; H.264 in yuv420p needs an even height and width "
                "(export with --cameras images, or convert at an even size)"
            )
        writer = _Writer(source, Path(out), as_video)
        for ep in episodes:
            writer.add(ep)
        writer.finish()


def camera_key(view: str) -> str:
    return f"{CAMERA_PREFIX}{view}"


def features(source: ExportSource, as_video: bool) -> dict[str, dict[str, Any]]:
    """``info.json``'s features: the vectors, the cameras, then LeRobot's five index columns."""
    height, width = source.frame_size
    out: dict[str, dict[str, Any]] = {
        STATE_KEY: {"dtype": "float32", "shape": [source.state_dim], "names": list(source.state_names) or None},
        ACTION_KEY: {"dtype": "float32", "shape": [source.action_dim], "names": list(source.action_names) or None},
    }
    if not source.state_dim:  # a robot without proprioceptive state: no observation.state column
        del out[STATE_KEY]
    for view in source.views:
        ft: dict[str, Any] = {"dtype": "video" if as_video else "image", "shape": [height, width, 3], "names": CAMERA_NAMES}
        if as_video:
            ft["info"] = {
                "video.height": height, "video.width": width, "video.codec": CODEC, "video.pix_fmt": PIX_FMT,
                "video.is_depth_map": False, "video.fps": _number(source.fps), "video.channels": 3, "has_audio": False,
            }
        out[camera_key(view)] = ft
    out["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in INDEX_KEYS[1:]:
        out[key] = {"dtype": "int64", "shape": [1], "names": None}
    return out


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


class _Moments:
    """Running min, max, sum and sum of squares per component (float64) over ``samples`` rows, and
    ``count`` as LeRobot reports it (frames, for a camera whose rows are pixels)."""

    def __init__(self) -> None:
        self.count, self.samples = 0, 0
        self.sum: Any = None
        self.sumsq: Any = None
        self.min: Any = None
        self.max: Any = None

    def add(self, values: np.ndarray, count: int) -> None:
        """``values``: (N, ...) samples, reduced over the first axis."""
        x = np.asarray(values, dtype=np.float64)
        part = _Moments()
        part.sum, part.sumsq, part.min, part.max = x.sum(0), np.square(x).sum(0), x.min(0), x.max(0)
        part.count, part.samples = count, len(x)
        self.merge(part)

    def merge(self, other: _Moments) -> None:
        if self.sum is None:
            self.sum, self.sumsq, self.min, self.max = other.sum, other.sumsq, other.min, other.max
        else:
            self.sum, self.sumsq = self.sum + other.sum, self.sumsq + other.sumsq
            self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        self.count += other.count
        self.samples += other.samples

    def stats(self, shape: tuple[int, ...] | None = None) -> dict[str, list]:
        mean = self.sum / self.samples
        std = np.sqrt(np.maximum(self.sumsq / self.samples - np.square(mean), 0.0))

        def shaped(a: np.ndarray) -> list:
            return np.reshape(a, shape).tolist() if shape is not None else np.atleast_1d(a).tolist()

        return {"min": shaped(self.min), "max": shaped(self.max), "mean": shaped(mean), "std": shaped(std),
                "count": [int(self.count)]}


class _Writer:
    """Writes episodes as they come: rows into the current data file, frames into each camera's
    current mp4; metadata once the last episode is in."""

    def __init__(self, source: ExportSource, out: Path, as_video: bool):
        import pyarrow as pa

        self.source, self.out, self.as_video = source, out, as_video
        self.features = features(source, as_video)
        self.tasks: dict[str, int] = {t: i for i, t in enumerate(source.tasks)}
        self.episode_rows: list[dict[str, Any]] = []
        self.totals: dict[str, _Moments] = {}
        self.frames = 0
        self.data = _DataFiles(out)
        self.videos = {view: _VideoFiles(out, camera_key(view), source.fps) for view in source.views} if as_video else {}
        self.vector_type = {STATE_KEY: pa.list_(pa.float32(), source.state_dim),
                            ACTION_KEY: pa.list_(pa.float32(), source.action_dim)}

    def add(self, ep: ExportEpisode) -> None:
        import pyarrow as pa

        steps = len(ep.action)
        where = f"{self.source.location}: episode {ep.index}"
        if ep.state.shape != (steps, self.source.state_dim) or ep.action.shape != (steps, self.source.action_dim):
            raise ExportError(f"{where}: state {ep.state.shape} and action {ep.action.shape} do not match the dataset's spec")
        task = ep.instruction
        if task not in self.tasks:
            self.tasks[task] = len(self.tasks)
        episode_index = len(self.episode_rows)
        frame_index = np.arange(steps, dtype=np.int64)
        index = self.frames + frame_index
        timestamp = (frame_index / self.source.fps).astype(np.float32)
        vectors = {k: v for k, v in ((STATE_KEY, ep.state), (ACTION_KEY, ep.action)) if k in self.features}
        columns: dict[str, Any] = {
            k: pa.FixedSizeListArray.from_arrays(pa.array(v.astype(np.float32).ravel()), v.shape[1]) for k, v in vectors.items()
        }
        values: dict[str, np.ndarray] = dict(vectors)
        row: dict[str, Any] = {"episode_index": episode_index, "tasks": [task], "length": steps}
        video_rows: dict[str, Any] = {}
        for view in self.source.views:
            frames = ep.views[view]
            if frames.shape[0] != steps:
                raise ExportError(f"{where}: camera {view!r} has {frames.shape[0]} frames for {steps} steps")
            key = camera_key(view)
            if self.as_video:
                video_rows |= {f"videos/{key}/{k}": v for k, v in self.videos[view].add(frames).items()}
            else:
                columns[key] = _png_column(frames, where, view)
        columns |= {
            "timestamp": pa.array(timestamp, pa.float32()),
            "frame_index": pa.array(frame_index, pa.int64()),
            "episode_index": pa.array(np.full(steps, episode_index), pa.int64()),
            "index": pa.array(index, pa.int64()),
            "task_index": pa.array(np.full(steps, self.tasks[task]), pa.int64()),
        }
        chunk, file = self.data.add(pa.table(columns))
        row |= {"data/chunk_index": chunk, "data/file_index": file,
                "dataset_from_index": int(self.frames), "dataset_to_index": int(self.frames + steps)}
        row |= video_rows
        values |= {"timestamp": timestamp[:, None], "frame_index": frame_index[:, None],
                   "episode_index": np.full((steps, 1), episode_index), "index": index[:, None],
                   "task_index": np.full((steps, 1), self.tasks[task])}
        for key, stats in self._episode_stats(values, ep).items():
            row |= {f"stats/{key}/{k}": v for k, v in stats.items()}
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        self.episode_rows.append(row)
        self.frames += steps

    def _episode_stats(self, values: Mapping[str, np.ndarray], ep: ExportEpisode) -> dict[str, dict[str, list]]:
        """This episode's statistics per feature (also added to the dataset's); cameras per channel in [0, 1]."""
        out: dict[str, dict[str, list]] = {}
        per_episode: dict[str, tuple[_Moments, tuple[int, ...] | None]] = {}
        for key in (k for k in (STATE_KEY, ACTION_KEY) if k in values):
            m = _Moments()
            m.add(values[key], len(values[key]))
            per_episode[key] = (m, None)
        for view in self.source.views:
            frames = ep.views[view]
            m = _Moments()
            m.add(frames.reshape(-1, 3) / 255.0, len(frames))  # count: frames, as LeRobot counts images
            per_episode[camera_key(view)] = (m, (3, 1, 1))
        for key in INDEX_KEYS:
            m = _Moments()
            m.add(values[key], len(values[key]))
            per_episode[key] = (m, None)
        for key in self.features:
            m, shape = per_episode[key]
            out[key] = m.stats(shape)
            self.totals.setdefault(key, _Moments()).merge(m)
        return out

    def finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.episode_rows:
            raise ExportError(f"{self.source.location}: no episodes to export")
        self.data.close()
        for video in self.videos.values():
            video.close()
        meta = self.out / "meta"
        episodes_path = self.out / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), episodes_path)
        _write_tasks(meta / "tasks.parquet", list(self.tasks))
        shapes = {camera_key(v): (3, 1, 1) for v in self.source.views}
        stats = {key: m.stats(shapes.get(key)) for key, m in self.totals.items()}
        (meta / "stats.json").write_text(json.dumps(stats, indent=4))
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.source.robot or None,
            "total_episodes": len(self.episode_rows),
            "total_frames": int(self.frames),
            "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
            "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
            "fps": _number(self.source.fps),
            "splits": {"train": f"0:{len(self.episode_rows)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.as_video else None,
            "features": self.features,
        }
        (meta / "info.json").write_text(json.dumps(info, indent=4, ensure_ascii=False))


def _next(chunk: int, file: int) -> tuple[int, int]:
    """The file after (chunk, file): a new chunk folder every CHUNKS_SIZE files, as LeRobot counts."""
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


class _DataFiles:
    """Episode rows gathered per data file; a file is written when the next episode would take it
    past DATA_FILES_SIZE_IN_MB, or at the end."""

    def __init__(self, out: Path):
        self.out, self.chunk, self.file = out, 0, 0
        self.tables: list[Any] = []
        self.bytes = 0

    def add(self, table: Any) -> tuple[int, int]:
        if self.tables and self.bytes + table.nbytes > DATA_FILES_SIZE_IN_MB * 1024**2:
            self._flush()
            self.chunk, self.file = _next(self.chunk, self.file)
        self.tables.append(table)
        self.bytes += table.nbytes
        return self.chunk, self.file

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.out / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(self.tables), path)
        self.tables, self.bytes = [], 0

    def close(self) -> None:
        if self.tables:
            self._flush()


class _VideoFiles:
    """One camera's mp4 files: episodes appended back to back, frame k of a file at k / fps; a new
    file once one reaches VIDEO_FILES_SIZE_IN_MB."""

    def __init__(self, out: Path, key: str, fps: float):
        self.out, self.key = out, key
        self.rate = Fraction(fps).limit_denominator(1001)
        self.chunk, self.file = 0, 0
        self.container: Any = None
        self.stream: Any = None
        self.count = 0  # frames in the open file

    def _path(self) -> Path:
        return self.out / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)

    def add(self, frames: np.ndarray) -> dict[str, Any]:
        """Append an episode's (T, H, W, 3) frames; returns its episode-table columns."""
        import av

        if self.container is not None and self._path().stat().st_size >= VIDEO_FILES_SIZE_IN_MB * 1024**2:
            self.close()
            self.chunk, self.file = _next(self.chunk, self.file)
        if self.container is None:
            path = self._path()
            path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(path), "w")
            self.stream = self.container.add_stream(ENCODER, rate=self.rate)
            self.stream.width, self.stream.height, self.stream.pix_fmt = frames.shape[2], frames.shape[1], PIX_FMT
            self.stream.time_base = 1 / self.rate
            self.stream.options = dict(ENCODER_OPTIONS)
            self.count = 0
        start = self.count
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.count
            self.container.mux(self.stream.encode(frame))
            self.count += 1
        return {"chunk_index": self.chunk, "file_index": self.file,
                "from_timestamp": float(start / self.rate), "to_timestamp": float(self.count / self.rate)}

    def close(self) -> None:
        if self.container is not None:
            self.container.mux(self.stream.encode(None))
            self.container.close()
            self.container = None


def _png_column(frames: np.ndarray, where: str, view: str) -> Any:
    """Frames as LeRobot's ``image`` dtype: a struct of PNG ``bytes`` and a ``path`` per row."""
    import av
    import pyarrow as pa

    rows = []
    for t, img in enumerate(frames):
        codec = av.CodecContext.create("png", "w")
        codec.width, codec.height, codec.pix_fmt = img.shape[1], img.shape[0], "rgb24"
        packets = codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")) + codec.encode(None)
        rows.append({"bytes": b"".join(bytes(p) for p in packets), "path": f"frame-{t:06d}.png"})
    return pa.array(rows, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """``meta/tasks.parquet`` as pandas writes LeRobot's frame (task_index, indexed by the task text):
    the index stored as ``__index_level_0__`` and described in the ``pandas`` schema metadata, so
    ``pandas.read_parquet`` gives the index back."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
