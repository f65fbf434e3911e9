"""Reading the selected keys of each episode, one episode in memory at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from hpt_kit.core.importer import ImportSourceError, Selection, SourceEpisode

from hpt_kit_lerobot.columns import RowReader, check_episode_rows, vectors
from hpt_kit_lerobot.frames import image_frames, video_frames
from hpt_kit_lerobot.meta import (
    CAMERA_DTYPES,
    NUMERIC_PREFIXES,
    VIDEO,
    EpisodeProblem,
    EpisodeRef,
    Source,
    open_source,
)

OPTIONS: dict[str, str] = {}  # this importer takes no --option; any given is refused by name


class EpisodeReader:
    """Checks the selection against ``meta/info.json`` on construction (a whole-source problem
    raises there, before any episode is read), then yields episodes in ``episode_index`` order."""

    def __init__(self, root: Path, selection: Selection):
        self.src: Source = open_source(root)
        self.selection = selection
        _check_selection(self.src, selection)
        self.rows = RowReader()
        vectors_ = (*selection.state, selection.action)
        self.vector_keys = tuple(dict.fromkeys(k for k in vectors_ if k))
        self.videos = tuple(k for k in selection.views if self.src.features[k]["dtype"] == VIDEO)
        self.images = tuple(k for k in selection.views if k not in self.videos)

    def episodes(self) -> Iterator[SourceEpisode]:
        first = self.selection.first
        for n, ref in enumerate(self.src.episode_refs()):
            if n < first:
                continue
            if self.selection.episodes and n >= first + self.selection.episodes:
                return
            try:
                arrays = self._read(ref)
            except EpisodeProblem as exc:
                yield SourceEpisode(ref.index, problem=str(exc))
                continue
            yield SourceEpisode(ref.index, arrays, instruction=ref.tasks[0] if ref.tasks else None)

    def _read(self, ref: EpisodeRef) -> dict[str, np.ndarray]:
        columns = [*self.vector_keys, *self.images]
        names = _data_columns(self.src)
        columns += [c for c in ("episode_index", "timestamp") if c in names and c not in columns]
        table = self.rows.read(ref, columns)
        check_episode_rows(table, ref)
        where = f"{ref.data}, episode {ref.index}"
        arrays = {key: vectors(table.column(key), key, where) for key in self.vector_keys}
        for key in self.images:
            arrays[key] = image_frames(table.column(key), self.src.root, self.selection.image_size, f"{where}, {key!r}")
        if self.videos:
            times = self._timestamps(table, ref)
            for key in self.videos:
                arrays[key] = video_frames(
                    ref.videos[key], times, self.src.camera_fps(key), self.selection.image_size,
                    f"camera {key!r}, episode {ref.index}",
                )
        return arrays

    def _timestamps(self, table, ref: EpisodeRef) -> np.ndarray:
        """Each row's time in the episode: its ``timestamp``, else its row number / fps."""
        if "timestamp" in table.column_names:
            return table.column("timestamp").to_numpy().astype(np.float64)
        if not self.src.fps:
            raise ImportSourceError(f"{self.src.root}: no 'timestamp' column and no fps to place video frames")
        return np.arange(table.num_rows) / self.src.fps


def _data_columns(src: Source) -> list[str]:
    """The columns the data files have: info.json's non-video features."""
    return [k for k, ft in src.features.items() if ft.get("dtype") != VIDEO]


def stored_image_format(src: Source, key: str) -> str:
    """How an ``image`` feature's pictures are encoded ("png", "jpeg"), from the first row of the
    first episode; "image" when that row cannot tell."""
    import pyarrow.parquet as pq

    from hpt_kit_lerobot.frames import IMAGE_FORMATS

    ref = next(iter(src.episode_refs()), None)
    if ref is None or not ref.data.exists():
        return "image"
    try:
        batch = next(pq.ParquetFile(ref.data).iter_batches(batch_size=1, columns=[key]), None)
    except (OSError, ValueError, KeyError):  # describe still describes; episodes() reports the file
        return "image"
    value = batch.column(0)[0].as_py() if batch is not None and batch.num_rows else None
    data = value.get("bytes") if isinstance(value, dict) else None
    return next((name for magic, name in IMAGE_FORMATS.items() if data and data.startswith(magic)), "image")


def _check_selection(src: Source, selection: Selection) -> None:
    """Unknown keys, keys of the wrong kind and unknown options are whole-source errors."""
    if selection.options:
        known = ", ".join(sorted(OPTIONS)) or "none"
        raise ImportSourceError(
            f"{src.root}: unknown option(s) {', '.join(sorted(selection.options))} for the lerobot importer (it takes {known})"
        )
    features = src.features
    asked = [*selection.state, *([selection.action] if selection.action else []), *selection.views]
    missing = [k for k in asked if k not in features]
    if missing:
        raise ImportSourceError(
            f"{src.root / 'meta/info.json'}: no key {', '.join(map(repr, missing))}; the keys it has: {', '.join(features)}"
        )
    for key in (*selection.state, *([selection.action] if selection.action else [])):
        dtype = str(features[key].get("dtype"))
        if not dtype.startswith(NUMERIC_PREFIXES):
            raise ImportSourceError(f"{src.root}: key {key!r} has dtype {dtype!r}; state and action keys must be numeric")
    for key in selection.views:
        dtype = str(features[key].get("dtype"))
        if dtype not in CAMERA_DTYPES:
            raise ImportSourceError(f"{src.root}: key {key!r} has dtype {dtype!r}; a view must be a video or image feature")
