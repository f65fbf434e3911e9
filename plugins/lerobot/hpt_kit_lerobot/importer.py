"""The ``lerobot`` importer: LeRobot datasets (codebase v2.0, v2.1 and v3.0) read with pyarrow and
PyAV, without the lerobot package.

The metadata (``meta/``) says what the dataset holds and where each episode's rows and frames
are (``meta``); rows come from parquet (``columns``), frames from mp4 by timestamp or from images
stored in parquet (``frames``). pyarrow and PyAV are imported when a dataset is first read, so that
registering the importer costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from hpt_kit.core.importer import (
    IMAGE,
    TEXT,
    VECTOR,
    Feature,
    ImportSourceError,
    Selection,
    SourceEpisode,
    SourceInfo,
)

NAME = "lerobot"
DEFAULT_STATE = ("observation.state",)
DEFAULT_ACTION = "action"
VIEW_PREFIX = "observation.images."


class LeRobotImporter:
    """Reads a LeRobot dataset folder (the one holding ``meta/info.json``)."""

    name = NAME
    reads_ranges = True  # Selection.first: episodes before it are not read

    def detect(self, path: Path) -> bool:
        from hpt_kit_lerobot.meta import SUPPORTED_VERSIONS, read_info

        if not (Path(path) / "meta/info.json").is_file():
            return False
        try:
            return read_info(Path(path)).get("codebase_version") in SUPPORTED_VERSIONS
        except ImportSourceError:
            return False

    def describe(self, path: Path) -> SourceInfo:
        from hpt_kit_lerobot.meta import open_source

        src = open_source(Path(path))
        features = tuple(_features(src))
        keys = {f.key: f for f in features}
        cameras = [f.key for f in features if f.kind == IMAGE]
        views = tuple(k for k in cameras if k.startswith(VIEW_PREFIX)) or tuple(cameras)
        info = src.info
        return SourceInfo(
            format=NAME,
            location=str(path),
            episodes=int(info.get("total_episodes") or 0),
            steps=int(info.get("total_frames") or 0),
            fps=src.fps,
            features=features,
            tasks=src.tasks,
            default_state=tuple(k for k in DEFAULT_STATE if k in keys and keys[k].kind == VECTOR),
            default_action=DEFAULT_ACTION if keys.get(DEFAULT_ACTION, None) and keys[DEFAULT_ACTION].kind == VECTOR else "",
            default_views=views,
            robot=str(info.get("robot_type") or ""),
            extra={
                "codebase_version": src.version,
                "data_path": info.get("data_path"),
                "video_path": info.get("video_path"),
                "chunks_size": info.get("chunks_size"),
                "splits": info.get("splits", {}),
                "names": {k: ft.get("names") for k, ft in src.features.items() if ft.get("names")},
            },
        )

    def episodes(self, path: Path, selection: Selection) -> Iterator[SourceEpisode]:
        from hpt_kit_lerobot.reading import EpisodeReader

        reader = EpisodeReader(Path(path), selection)  # checks keys and options before any episode
        return reader.episodes()


def _features(src) -> Iterator[Feature]:
    """Every feature info.json declares, as the kit sees it; dtypes it cannot use (audio, say)
    are left out rather than refused, so that the rest of the dataset stays importable."""
    from hpt_kit_lerobot.meta import (
        CAMERA_DTYPES,
        NUMERIC_PREFIXES,
        STRING,
        VIDEO,
        image_shape,
        vector_names,
        vector_width,
    )
    from hpt_kit_lerobot.reading import stored_image_format

    for key, ft in src.features.items():
        dtype = str(ft.get("dtype", ""))
        if dtype in CAMERA_DTYPES:
            codec = (ft.get("info") or {}).get("video.codec", "")
            stored = f"video/{codec}" if dtype == VIDEO else stored_image_format(src, key)
            yield Feature(key, IMAGE, image_shape(key, ft), stored, src.camera_fps(key) if dtype == VIDEO else src.fps)
        elif dtype == STRING:
            yield Feature(key, TEXT, (), dtype)
        elif dtype.startswith(NUMERIC_PREFIXES):
            yield Feature(key, VECTOR, (vector_width(ft),), dtype, names=vector_names(ft))
