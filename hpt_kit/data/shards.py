"""Sharded datasets: a folder of ordinary stores (shards) and a manifest, opened as one dataset.

Layout::

    NAME.zarr/
        manifest.json
        shard-00000.zarr/    each an ordinary store (hpt_kit.data.store), written by the atomic writer
        shard-00001.zarr/
        ...

``manifest.json`` holds ``format`` ("hpt-kit-sharded-dataset"), ``format_version``, ``embodiment``,
``spec``, ``stats`` (merged exactly from the shards' raw sums, ``moments``, not averaged from their
statistics), ``moments``, ``num_episodes``, ``num_steps``, ``shards`` (in order: ``path`` relative to
the folder, ``episodes``, ``steps``), ``notes`` (the shards' notes merged, see :func:`merge_notes`),
``provenance`` (what made it, and each shard's own notes), ``kit_version``, ``created`` and
``checksums``. Episode ``k`` of the dataset is the shards' episodes counted in order.

``Dataset(path)`` opens such a folder as a :class:`ShardedDataset`: the same attributes and methods,
its arrays reading across shards, so every command that opens datasets takes either kind. Errors
name the shard. ``hpt-kit data merge`` writes one into a single store.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.core.spec import ACTION, STATE, EmbodimentData, Episode, episode_field_shapes, spec_from_dict
from hpt_kit.data.store import CHECKSUMS, Dataset, DatasetError, RunningStats

MANIFEST = "manifest.json"
FORMAT = "hpt-kit-sharded-dataset"
FORMAT_VERSION = 1
SUMMED_NOTES = ("episodes_attempted", "episodes_dropped")  # counts over episodes: the shards' add up
OWN_NOTES = ("first_episode", "moments")  # facts about one shard, not the dataset


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.zarr"


def is_sharded(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _rate(episodes: int, attempted: int) -> float | None:
    return episodes / attempted if attempted else None


def merge_notes(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The notes of shards written as ranges of one run, as that run writes them whole: expert counts
    summed (and rates worked out again, per task too), instructions re-indexed in first-seen order,
    skipped episodes listed in order; any other note kept when every shard agrees, else its values
    in shard order under ``per_shard``."""
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for part in parts for k in part))
    for key in keys:
        values = [part[key] for part in parts if key in part]
        if key in OWN_NOTES or key in ("instructions", "episode_instructions", "expert_success_rate"):
            continue
        if key in SUMMED_NOTES:
            out[key] = sum(values)
        elif key == "per_task":
            out[key] = _merge_tasks(values)
        elif key == "skipped_episodes":
            out[key] = [entry for value in values for entry in value]
        elif all(v == values[0] for v in values):
            out[key] = values[0]
        else:
            out.setdefault("per_shard", {})[key] = [part.get(key) for part in parts]
    if "expert_success_rate" in keys and "episodes_attempted" in out:
        out["expert_success_rate"] = _rate(out["episodes_attempted"] - out["episodes_dropped"], out["episodes_attempted"])
    if all("episode_instructions" in part for part in parts) and parts:
        texts: list[str] = []
        index: list[int] = []
        for part in parts:
            for i in part["episode_instructions"]:
                text = part["instructions"][i]
                if text not in texts:
                    texts.append(text)
                index.append(texts.index(text))
        out["instructions"], out["episode_instructions"] = texts, index
    return out


def _merge_tasks(values: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = {}
    for value in values:
        for name, task in value.items():
            into = tasks.setdefault(name, {"episodes": 0, "episodes_attempted": 0, "episodes_dropped": 0})
            for key in ("episodes", "episodes_attempted", "episodes_dropped"):
                into[key] += task.get(key, 0)
    for task in tasks.values():
        task["expert_success_rate"] = _rate(task["episodes"], task["episodes_attempted"])
    return tasks


def _moments(ds: Dataset) -> Mapping[str, Any]:
    """A shard's raw sums: stored by the writer; worked out from its arrays for older stores."""
    if "moments" in ds.attrs:
        return ds.attrs["moments"]
    stats = RunningStats(ds.spec.observation.state_dim, ds.spec.action.dim)
    for start, end in zip(ds.episode_starts, ds.episode_ends):
        stats.update({STATE: np.asarray(ds.array(STATE)[start:end]), ACTION: np.asarray(ds.array(ACTION)[start:end])})
    return stats.moments()


def write_manifest(
    folder: str | Path,
    shards: Sequence[str],
    provenance: Mapping[str, Any],
    final_spec: Callable[[EmbodimentData, Mapping[str, Any], np.ndarray], EmbodimentData] | None = None,
    notes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``folder/manifest.json`` over the finished stores ``shards`` (names in ``folder``, in
    order), atomically; returns the manifest. The spec is the first shard's, or ``final_spec(that
    spec, stats, episode lengths)`` over the whole data (an import's action bounds). The notes are
    ``notes`` if given, else the shards' merged as ranges of one run (:func:`merge_notes`)."""
    from hpt_kit.core.version import __version__

    folder = Path(folder)
    opened = [Dataset(folder / name, verify=False, recovering=False) for name in shards]
    first = opened[0]
    for name, ds in zip(shards, opened):
        if episode_field_shapes(ds.spec) != episode_field_shapes(first.spec):
            raise DatasetError(f"{folder / name}: its fields differ from {folder / shards[0]}'s; shards of one dataset must match")
    stats = RunningStats.merged(_moments(ds) for ds in opened)
    lengths = np.concatenate([np.diff(ds.episode_ends, prepend=0) for ds in opened])
    spec = final_spec(first.spec, stats.result(), lengths) if final_spec else first.spec
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "embodiment": first.name,
        "spec": spec.to_dict() if hasattr(spec, "to_dict") else spec,
        "stats": stats.result(),
        "moments": stats.moments(),
        "num_episodes": int(sum(ds.num_episodes for ds in opened)),
        "num_steps": int(sum(ds.num_steps for ds in opened)),
        "shards": [{"path": name, "episodes": ds.num_episodes, "steps": ds.num_steps} for name, ds in zip(shards, opened)],
        "notes": dict(notes) if notes is not None else merge_notes([ds.notes for ds in opened]),
        "provenance": {**provenance, "shard_notes": [ds.notes for ds in opened]},
        "kit_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "checksums": CHECKSUMS if all(ds.checksums for ds in opened) else None,
    }
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / MANIFEST)
    return manifest


def write_sharded(
    datasets: Sequence[Dataset], out: str | Path, shard_episodes: int, overwrite: bool = False,
    on_episode: Callable[[int, int], None] | None = None,
) -> Path:
    """Every episode of ``datasets`` (equal specs), in order, as a sharded dataset at ``out`` with
    ``shard_episodes`` episodes per shard (`hpt-kit data merge --shard-episodes`): the way back from
    one store to shards. Built in a hidden folder beside ``out`` and renamed into place when whole."""
    import shutil
    import uuid

    from hpt_kit.data.store import _replace, replacing, write_dataset
    from hpt_kit.data.tools import _notes

    if shard_episodes < 1:
        raise ValueError(f"--shard-episodes must be at least 1, got {shard_episodes}")
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.spec.to_dict() != first.spec.to_dict():
            raise DatasetError(f"{ds.path}: its spec differs from {first.path}'s; merge needs equal specs")
    out = Path(out)
    if any(out.resolve() == ds.path.resolve() for ds in datasets):
        raise ValueError(f"{out}: write to a new path, not over a source dataset")
    everything = [(ds, i) for ds in datasets for i in range(ds.num_episodes)]
    with replacing(out, overwrite):
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            names, done = [], 0
            for start in range(0, len(everything), shard_episodes):
                sources: list[tuple[Dataset, list[int]]] = []
                for ds, i in everything[start : start + shard_episodes]:
                    if not sources or sources[-1][0] is not ds:
                        sources.append((ds, []))
                    sources[-1][1].append(i)
                notes = _notes(sources, "merge")
                notes.pop("derived", None)  # recorded once, in the manifest's provenance
                names.append(shard_name(len(names)))

                def counted(i: int, steps: int, offset: int = done) -> None:
                    if on_episode is not None:
                        on_episode(offset + i, steps)

                write_dataset(tmp / names[-1], first.spec, (ds.episode(i) for ds, kept in sources for i in kept), notes,
                              on_episode=counted)
                done += sum(len(kept) for _, kept in sources)
            whole = _notes([(ds, list(range(ds.num_episodes))) for ds in datasets], "merge")
            write_manifest(tmp, names, {"operation": "merge", "sources": whole.pop("derived")["sources"]}, notes=whole)
            _replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


class ShardedDataset(Dataset):
    """A folder of shards opened as one dataset (see the module docstring)."""

    def __init__(self, path: str | Path, verify: bool = True, recovering: bool = True):
        self.path = Path(path)
        where = self.path / MANIFEST
        try:
            attrs = json.loads(where.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{where}: cannot be read ({exc})") from None
        if not isinstance(attrs, dict) or attrs.get("format") != FORMAT:
            raise DatasetError(f"{where}: 'format' is {attrs.get('format') if isinstance(attrs, dict) else None!r}, expected {FORMAT!r}")
        if attrs.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{where}: format_version {attrs.get('format_version')!r} is not supported (this kit reads {FORMAT_VERSION})")
        for key in ("embodiment", "spec", "stats", "num_episodes", "num_steps", "shards"):
            if key not in attrs:
                raise DatasetError(f"{where}: key {key!r} is missing")
        self.attrs = attrs
        try:
            self.spec = spec_from_dict(attrs["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: 'spec' is malformed ({exc!r})") from exc
        self.name, self.stats, self.notes = attrs["embodiment"], attrs["stats"], attrs.get("notes", {})
        self.checksums = attrs.get("checksums")
        self.shards: list[Dataset] = []
        ends, offset = [], 0
        for i, entry in enumerate(attrs["shards"]):
            rel = Path(str(entry.get("path", "")))
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                raise DatasetError(f"{where}: shard {i} has path {str(rel)!r}; shards live inside the dataset folder")
            shard = Dataset(self.path / rel, verify=verify, recovering=False)
            if (shard.num_episodes, shard.num_steps) != (entry.get("episodes"), entry.get("steps")):
                raise DatasetError(
                    f"{shard.path}: holds {shard.num_episodes} episodes ({shard.num_steps} steps); {where} says "
                    f"{entry.get('episodes')} ({entry.get('steps')} steps): the dataset is damaged"
                )
            if episode_field_shapes(shard.spec) != episode_field_shapes(self.spec):
                raise DatasetError(f"{shard.path}: its fields differ from the spec in {where}: the dataset is damaged")
            self.shards.append(shard)
            ends.append(shard.episode_ends + offset)
            offset += shard.num_steps
        if not self.shards:
            raise DatasetError(f"{where}: lists no shards")
        self.episode_ends = np.concatenate(ends).astype(np.int64)
        self.row_starts = np.cumsum([0, *(s.num_steps for s in self.shards)]).astype(np.int64)
        self.first_episodes = np.cumsum([0, *(s.num_episodes for s in self.shards)]).astype(np.int64)
        if len(self.episode_ends) != attrs["num_episodes"] or self.num_steps != attrs["num_steps"]:
            raise DatasetError(f"{where}: the shards hold {len(self.episode_ends)} episodes ({self.num_steps} steps), "
                               f"the manifest says {attrs['num_episodes']} ({attrs['num_steps']})")

    def array(self, field: str) -> ShardedArray:
        return ShardedArray([s.array(field) for s in self.shards], self.row_starts, self.path, field)

    def load(self, field: str) -> np.ndarray:
        parts = []
        for shard, first in zip(self.shards, self.first_episodes):
            try:
                parts.append(shard.load(field))
            except DatasetError as exc:
                raise DatasetError(f"{exc} (its episode 0 is episode {int(first)} of {self.path})") from None
        return np.concatenate(parts, axis=0)

    def episode(self, index: int) -> Episode:
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"{self.path}: episode {index} out of range (0..{self.num_episodes - 1})")
        shard = int(np.searchsorted(self.first_episodes, index, side="right")) - 1
        return self.shards[shard].episode(index - int(self.first_episodes[shard]))


class ShardedArray:
    """One field across shards, read by rows like a zarr array: ``a[i]``, ``a[start:stop]`` (with
    further indices for the other axes), ``shape``, ``dtype``, ``chunks`` (the first shard's)."""

    def __init__(self, parts: Sequence[Any], starts: np.ndarray, path: Path, field: str):
        self._parts, self._starts, self._path, self._field = list(parts), starts, path, field
        first = self._parts[0]
        self.shape = (int(starts[-1]), *first.shape[1:])
        self.dtype, self.chunks, self.ndim = first.dtype, first.chunks, len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(rows, int | np.integer):
            row = int(rows) + (len(self) if rows < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"{self._path}: array {self._field!r} row {rows} out of range (0..{len(self) - 1})")
            shard = int(np.searchsorted(self._starts, row, side="right")) - 1
            return self._parts[shard][(row - int(self._starts[shard]), *rest)]
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"{self._path}: array {self._field!r} is read by a row or a range of rows, not {rows!r}")
        start, stop, _ = rows.indices(len(self))
        pieces = []
        for shard, (lo, hi) in enumerate(zip(self._starts[:-1], self._starts[1:])):
            a, b = max(start, int(lo)), min(stop, int(hi))
            if a < b:
                pieces.append(np.asarray(self._parts[shard][(slice(a - int(lo), b - int(lo)), *rest)]))
        if not pieces:
            return np.asarray(self._parts[0][(slice(0, 0), *rest)])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)
