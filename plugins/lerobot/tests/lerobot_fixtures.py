"""Writes LeRobot datasets (v2.1 and v3.0 layouts) with pyarrow and PyAV, for the tests and for
throughput measurements, and breaks them in the ways real datasets break.

The values are predictable so tests can check what was read: episode ``e`` step ``t`` has state
``state_value(e, t)``, action ``-state_value(e, t)[:action_dim]``, and camera frame ``k`` (at the
camera's own rate) is a flat grey of level ``frame_level(e, k)``.

A large dataset for a throughput run:

    python plugins/lerobot/tests/lerobot_fixtures.py /tmp/big --episodes 200 --steps 400 \\
        --size 224 224 --cameras front wrist --version v3.0 --codec av1 --noise
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TASKS = ("pick up the red cube", "put the cube in the bowl")
ENCODERS = {"h264": "libx264", "av1": "libsvtav1"}
ENCODER_OPTIONS = {"h264": {"preset": "veryfast"}, "av1": {"preset": "12"}}
ENV_SHAPE = (2, 2)  # a nested (2, 2) feature, flattened to 4 values per step on import
V2_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V3_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V3_EPISODES = "meta/episodes/chunk-000/file-000.parquet"
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration per file otherwise


def state_value(episode: int, step: int, dim: int = 4) -> np.ndarray:
    return (episode * 100 + step + 0.1 * np.arange(dim)).astype(np.float32)


def frame_level(episode: int, k: int) -> int:
    return 16 + (8 * k + 40 * episode) % 216


def write_lerobot(
    root: Path,
    episodes: int = 3,
    steps: int = 12,
    frame_size: tuple[int, int] = (48, 64),
    cameras: Sequence[str] = ("front", "wrist"),
    *,
    version: str = "v3.0",
    fps: int = 10,
    codec: str = "h264",
    camera_fps: Mapping[str, int] | None = None,
    image_cameras: Sequence[str] = (),
    state_dim: int = 4,
    action_dim: int = 3,
    fixed_size_lists: bool = False,
    episodes_per_file: int = 0,
    rows_per_group: int = 0,
    gop: int = 2,
    noise: bool = False,
    camera_sizes: Mapping[str, tuple[int, int]] | None = None,
    follow: bool = False,
) -> Path:
    """Writes a dataset to ``root`` and returns it. ``cameras`` are mp4 videos (``codec`` "h264" or
    "av1", at ``camera_fps[name]`` or ``fps``), ``image_cameras`` PNG images inside the parquet rows.
    v3: ``episodes_per_file`` episodes share a data file and an mp4 (0: all), parquet row groups of
    ``rows_per_group`` rows (0: one per file) so that groups straddle episodes. ``camera_sizes``: a
    video camera's own (height, width) instead of ``frame_size``. ``follow``: a position-controlled
    arm, the action the next step's state (the last step's its own), named as the state's joints."""
    root = Path(root)
    camera_fps = dict(camera_fps or {})
    spec = _Spec(episodes, steps, frame_size, tuple(cameras), tuple(image_cameras), fps, codec, camera_fps,
                 state_dim, action_dim, fixed_size_lists, gop, noise)
    spec.sizes = {c: tuple(s) for c, s in (camera_sizes or {}).items()}
    spec.follow = follow
    if follow and action_dim != state_dim:
        raise ValueError("follow: the action is the next state, so action_dim must equal state_dim")
    if version.startswith("v2"):
        _write_v2(root, spec, version)
    else:
        _write_v3(root, spec, episodes_per_file or episodes, rows_per_group)
    return root


class _Spec:
    def __init__(self, episodes, steps, size, cameras, image_cameras, fps, codec, camera_fps,
                 state_dim, action_dim, fixed, gop, noise):
        self.episodes, self.steps, self.size = episodes, steps, tuple(size)
        self.cameras, self.image_cameras, self.fps, self.codec = cameras, image_cameras, fps, codec
        self.camera_fps = {c: camera_fps.get(c, fps) for c in cameras}
        self.state_dim, self.action_dim, self.fixed, self.gop, self.noise = state_dim, action_dim, fixed, gop, noise
        self.rng = np.random.default_rng(0)
        self.sizes: dict[str, tuple[int, int]] = {}
        self.follow = False

    def camera_frames(self, cam: str) -> int:
        return math.ceil(self.steps * self.camera_fps[cam] / self.fps)

    def frames(self, episode: int, count: int, cam: str = "") -> np.ndarray:
        height, width = self.sizes.get(cam, self.size)
        levels = np.array([frame_level(episode, k) for k in range(count)], np.int16)
        img = np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()
        if self.noise:
            img += self.rng.integers(-12, 13, img.shape, dtype=np.int16)
        return np.clip(img, 0, 255).astype(np.uint8)


def _features(spec: _Spec) -> dict:
    height, width = spec.size
    feats: dict = {
        "observation.state": {"dtype": "float32", "shape": [spec.state_dim], "names": [f"joint_{i}" for i in range(spec.state_dim)]},
        "action": {"dtype": "float32", "shape": [spec.action_dim],
                   "names": [f"{'joint' if spec.follow else 'motor'}_{i}" for i in range(spec.action_dim)]},
        "observation.environment_state": {"dtype": "float32", "shape": list(ENV_SHAPE), "names": None},
    }
    for cam in spec.cameras:
        height, width = spec.sizes.get(cam, spec.size)
        feats[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": height, "video.width": width, "video.codec": spec.codec,
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                     "video.fps": spec.camera_fps[cam], "video.channels": 3, "has_audio": False},
        }
    height, width = spec.size
    for cam in spec.image_cameras:
        feats[f"observation.images.{cam}"] = {"dtype": "image", "shape": [3, height, width], "names": ["channels", "height", "width"]}
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        feats[key] = {"dtype": dtype, "shape": [1], "names": None}
    return feats


def _info(spec: _Spec, version: str, extra: dict) -> dict:
    return {
        "codebase_version": version, "robot_type": "so100",
        "total_episodes": spec.episodes, "total_frames": spec.episodes * spec.steps,
        "total_tasks": min(len(TASKS), spec.episodes), "chunks_size": 1000, "fps": spec.fps,
        "splits": {"train": f"0:{spec.episodes}"}, **extra, "features": _features(spec),
    }


def _vector_type(spec: _Spec, width: int) -> pa.DataType:
    return pa.list_(pa.float32(), width) if spec.fixed else pa.list_(pa.float32())


def _episode_table(spec: _Spec, episode: int, first_index: int) -> pa.Table:
    steps = spec.steps
    state = np.stack([state_value(episode, t, spec.state_dim) for t in range(steps)])
    env = np.arange(steps * 4, dtype=np.float32).reshape(steps, *ENV_SHAPE) + episode
    columns = {
        "observation.state": pa.array(list(state), _vector_type(spec, spec.state_dim)),
        "action": pa.array(list(np.concatenate([state[1:], state[-1:]]) if spec.follow else -state[:, : spec.action_dim]),
                           _vector_type(spec, spec.action_dim)),
        "observation.environment_state": pa.array(env.tolist(), pa.list_(pa.list_(pa.float32()))),
    }
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for cam in spec.image_cameras:
        pngs = [_png(img) for img in spec.frames(episode, steps)]
        columns[f"observation.images.{cam}"] = pa.array(
            [{"bytes": b, "path": f"frame_{t:06d}.png"} for t, b in enumerate(pngs)], image_type
        )
    columns |= {
        "timestamp": pa.array(np.arange(steps, dtype=np.float32) / spec.fps, pa.float32()),
        "frame_index": pa.array(np.arange(steps), pa.int64()),
        "episode_index": pa.array(np.full(steps, episode), pa.int64()),
        "index": pa.array(first_index + np.arange(steps), pa.int64()),
        "task_index": pa.array(np.full(steps, episode % len(TASKS)), pa.int64()),
    }
    return pa.table(columns)


def _png(img: np.ndarray) -> bytes:
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = img.shape[1], img.shape[0], "rgb24"
    packets = codec.encode(av.VideoFrame.from_ndarray(img, format="rgb24")) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def write_video(path: Path, frames: Iterable[np.ndarray], fps: int, codec: str = "h264", gop: int = 2) -> None:
    """An mp4 of ``frames`` ((H, W, 3) uint8 each), frame ``k`` shown at ``k / fps`` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = None
        for k, img in enumerate(frames):
            if stream is None:
                stream = out.add_stream(ENCODERS[codec], rate=fps)
                stream.width, stream.height, stream.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
                stream.time_base = Fraction(1, fps)
                stream.options = {**ENCODER_OPTIONS[codec], "g": str(gop)}
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _write_v2(root: Path, spec: _Spec, version: str) -> None:
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    info = _info(spec, version, {"total_videos": spec.episodes * len(spec.cameras), "total_chunks": 1,
                                 "data_path": V2_DATA, "video_path": V2_VIDEO if spec.cameras else None})
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    episodes, stats = [], []
    for e in range(spec.episodes):
        path = root / V2_DATA.format(episode_chunk=0, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = _episode_table(spec, e, e * spec.steps)
        pq.write_table(table, path)
        for cam in spec.cameras:
            video = root / V2_VIDEO.format(episode_chunk=0, video_key=f"observation.images.{cam}", episode_index=e)
            write_video(video, spec.frames(e, spec.camera_frames(cam), cam), spec.camera_fps[cam], spec.codec, spec.gop)
        episodes.append({"episode_index": e, "tasks": [TASKS[e % len(TASKS)]], "length": spec.steps})
        stats.append({"episode_index": e, "stats": _stats(table)})
    _write_jsonl(meta / "episodes.jsonl", episodes)
    _write_jsonl(meta / "episodes_stats.jsonl", stats)
    _write_jsonl(meta / "tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(TASKS)])


def _stats(table: pa.Table) -> dict:
    state = np.stack(table.column("observation.state").to_pylist())
    return {"observation.state": {"min": state.min(0).tolist(), "max": state.max(0).tolist(),
                                  "mean": state.mean(0).tolist(), "std": state.std(0).tolist(), "count": [len(state)]}}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_v3(root: Path, spec: _Spec, per_file: int, rows_per_group: int) -> None:
    meta = root / "meta"
    (meta / "episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    info = _info(spec, "v3.0", {"data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
                                "data_path": V3_DATA, "video_path": V3_VIDEO if spec.cameras else None})
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    rows = []
    for file_index, first in enumerate(range(0, spec.episodes, per_file)):
        group = range(first, min(first + per_file, spec.episodes))
        tables = [_episode_table(spec, e, e * spec.steps) for e in group]
        data = root / V3_DATA.format(chunk_index=0, file_index=file_index)
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), data, row_group_size=rows_per_group or None)
        spans = {cam: _write_v3_video(root, spec, cam, file_index, group) for cam in spec.cameras}
        for i, (e, table) in enumerate(zip(group, tables)):
            row = {"episode_index": e, "tasks": [TASKS[e % len(TASKS)]], "length": spec.steps,
                   "data/chunk_index": 0, "data/file_index": file_index,
                   "dataset_from_index": e * spec.steps, "dataset_to_index": (e + 1) * spec.steps}
            for cam, bounds in spans.items():
                key = f"videos/observation.images.{cam}"
                row |= {f"{key}/chunk_index": 0, f"{key}/file_index": file_index,
                        f"{key}/from_timestamp": bounds[i][0], f"{key}/to_timestamp": bounds[i][1]}
            row |= {f"stats/observation.state/{k}": v for k, v in _stats(table)["observation.state"].items()}
            row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), root / V3_EPISODES)
    # What pandas writes for a frame indexed by the task text: the index as __index_level_0__.
    tasks = pa.table({"task_index": pa.array(range(len(TASKS)), pa.int64()), "__index_level_0__": list(TASKS)})
    pq.write_table(tasks, meta / "tasks.parquet")


def _write_v3_video(root: Path, spec: _Spec, cam: str, file_index: int, group: range) -> list[tuple[float, float]]:
    """One mp4 holding the episodes of ``group`` one after the other; returns each one's span."""
    count, rate = spec.camera_frames(cam), spec.camera_fps[cam]
    frames = (img for e in group for img in spec.frames(e, count, cam))
    path = root / V3_VIDEO.format(video_key=f"observation.images.{cam}", chunk_index=0, file_index=file_index)
    write_video(path, frames, rate, spec.codec, spec.gop)
    return [(i * count / rate, i * count / rate + spec.steps / spec.fps) for i in range(len(group))]


# Ways real datasets break -------------------------------------------------------------------------


def _episode_file(root: Path, episode: int) -> tuple[Path, bool]:
    info = json.loads((root / "meta/info.json").read_text())
    if info["codebase_version"].startswith("v2"):
        return root / V2_DATA.format(episode_chunk=0, episode_index=episode), False
    ep = pq.read_table(root / V3_EPISODES).to_pylist()[episode]
    return root / V3_DATA.format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"]), True


def _rewrite(root: Path, episode: int, key: str, change) -> None:
    """Rewrites ``key`` of ``episode``'s rows as ``change(list of row values)`` returns them."""
    path, shared = _episode_file(root, episode)
    table = pq.read_table(path)
    rows = np.flatnonzero(table.column("episode_index").to_numpy() == episode) if shared else np.arange(table.num_rows)
    values = table.column(key).to_pylist()
    for i, v in zip(rows, change([values[i] for i in rows])):
        values[i] = v
    column = pa.array(values, pa.list_(pa.float32()) if isinstance(values[0], list) else table.schema.field(key).type)
    table = table.set_column(table.column_names.index(key), key, column)
    pq.write_table(table, path, row_group_size=pq.ParquetFile(path).metadata.row_group(0).num_rows)


def make_ragged(root: Path, episode: int, key: str = "observation.state") -> None:
    """The last row of ``key`` in ``episode`` loses its last value."""
    _rewrite(root, episode, key, lambda rows: rows[:-1] + [rows[-1][:-1]])


def shift_timestamps(root: Path, episode: int, scale: float = 1.5) -> None:
    """``episode``'s timestamps stretched so that they no longer fall on the video's frames."""
    _rewrite(root, episode, "timestamp", lambda rows: [t * scale + 0.033 for t in rows])


def video_path(root: Path, episode: int, camera: str) -> Path:
    info = json.loads((root / "meta/info.json").read_text())
    key = f"observation.images.{camera}"
    if info["codebase_version"].startswith("v2"):
        return root / V2_VIDEO.format(episode_chunk=0, video_key=key, episode_index=episode)
    ep = pq.read_table(root / V3_EPISODES).to_pylist()[episode]
    return root / V3_VIDEO.format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                                  file_index=ep[f"videos/{key}/file_index"])


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic LeRobot dataset.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--cameras", nargs="+", default=["front", "wrist"])
    parser.add_argument("--version", choices=("v2.1", "v3.0"), default="v3.0")
    parser.add_argument("--codec", choices=tuple(ENCODERS), default="av1")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--episodes-per-file", type=int, default=20)
    parser.add_argument("--noise", action="store_true", help="textured frames (larger videos)")
    args = parser.parse_args()
    write_lerobot(args.root, args.episodes, args.steps, tuple(args.size), args.cameras, version=args.version,
                  codec=args.codec, fps=args.fps, episodes_per_file=args.episodes_per_file, noise=args.noise)
    print(args.root)


if __name__ == "__main__":
    main()
