"""Dataset tools: describe a dataset, choose episodes from it, write subsets and merges.

Every new dataset goes through :func:`~hpt_kit.data.store.write_dataset`, so it is validated against
its spec, gets fresh normaliser statistics and appears only when complete. A derived dataset keeps
its source's notes and adds ``derived`` (what was done, from where, which source episodes);
per-episode notes (``episode_instructions``) are re-indexed to the episodes kept.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.core.spec import ACTION, EPISODE_DTYPES, IMAGE, STATE, episode_field_shapes
from hpt_kit.data.store import Dataset, DatasetError, write_dataset

STAT_BYTES = 64 << 20  # float64 bytes per slab when computing field statistics (65,536 rows of 3 views of
# 90x160 were 48 GB)
PER_DIM = (STATE, "action")  # fields whose statistics are reported per dimension


def size_on_disk(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(os.path.getsize(Path(root) / f) for root, _, files in os.walk(path) for f in files)


def episode_instructions(ds: Dataset) -> list[str | None]:
    """Each episode's instruction, from the notes a conversion or import wrote; None where none."""
    texts, index = ds.notes.get("instructions"), ds.notes.get("episode_instructions")
    if not texts or index is None or len(index) != ds.num_episodes:
        return [None] * ds.num_episodes
    return [texts[i] for i in index]


def _field_stats(ds: Dataset, name: str) -> dict[str, Any]:
    """min, max, mean and std of a field (per dimension for state and action), in slabs of rows."""
    arr = ds.array(name)
    per_dim = name in PER_DIM
    axis = 0 if per_dim else None
    n, s1, s2, lo, hi = 0, 0.0, 0.0, np.inf, -np.inf
    rows = max(1, STAT_BYTES // (8 * max(1, math.prod(arr.shape[1:]))))
    for start in range(0, ds.num_steps, rows):
        slab = np.asarray(arr[start : start + rows], dtype=np.float64)
        if not per_dim:
            slab = slab.reshape(-1)
        n += slab.shape[0] if per_dim else slab.size
        s1, s2 = s1 + slab.sum(axis), s2 + (slab * slab).sum(axis)
        lo, hi = np.minimum(lo, slab.min(axis)), np.maximum(hi, slab.max(axis))
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    out = {"min": lo, "max": hi, "mean": mean, "std": std}
    return {k: (np.asarray(v).tolist()) for k, v in out.items()}


def dataset_info(ds: Dataset, stats: bool = True) -> dict[str, Any]:
    """What a dataset holds, as plain data: counts, episode lengths, fields (per-step shape, dtype,
    chunking, statistics), instructions, notes, size on disk, provenance."""
    lengths = np.diff(ds.episode_ends, prepend=0)
    obs = ds.spec.observation
    # the source's names: a value's (joints, motors) for vectors, a view's (cameras) for frames
    names = {STATE: obs.state_names, ACTION: ds.spec.action.names, IMAGE: obs.image.views if obs.image is not None else ()}
    fields = {}
    for name, step_shape in episode_field_shapes(ds.spec).items():
        arr = ds.array(name)
        fields[name] = {
            "shape": list(step_shape),
            "dtype": str(np.dtype(EPISODE_DTYPES.get(name, np.float32))),
            "chunk_rows": int(arr.chunks[0]),
            **({"names": list(names[name])} if names.get(name) else {}),
            **({"stats": _field_stats(ds, name)} if stats else {}),
        }
    instructions = [t for t in episode_instructions(ds) if t is not None]
    return {
        "path": str(ds.path),
        "embodiment": ds.name,
        "episodes": ds.num_episodes,
        "steps": ds.num_steps,
        "episode_length": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())},
        "fields": fields,
        "instructions": {t: instructions.count(t) for t in dict.fromkeys(instructions)},
        "control_hz": ds.spec.action.control_hz,
        "bytes_on_disk": size_on_disk(ds.path),
        "kit_version": ds.attrs.get("kit_version"),
        "created": ds.attrs.get("created"),
        "notes": ds.notes,
        **({"shards": [str(s.path) for s in ds.shards]} if hasattr(ds, "shards") else {}),  # a sharded dataset's stores
    }


def parse_episode_list(text: str, count: int, where: str = "--episodes") -> list[int]:
    """``"0,3,5-9"`` as sorted unique episode indices, each checked against ``count``."""
    chosen: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise ValueError(f"{where}: {part!r} is not an index or a range like 5-9")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise ValueError(f"{where}: range {part!r} runs backwards")
        if last >= count:
            raise ValueError(f"{where}: episode {last} does not exist (the dataset has {count}: 0-{count - 1})")
        chosen.update(range(first, last + 1))
    if not chosen:
        raise ValueError(f"{where}: no episodes given")
    return sorted(chosen)


def choose_episodes(
    ds: Dataset,
    episodes: str | None = None,
    fraction: float | None = None,
    instruction: str | None = None,
    seed: int = 0,
) -> list[int]:
    """Episode indices by exactly one rule: a list (``"0,3,5-9"``), a random ``fraction`` (at least
    one episode, drawn with ``seed``, kept in dataset order) or the episodes whose instruction
    contains ``instruction`` (case-insensitive)."""
    rules = [r for r in (episodes, fraction, instruction) if r is not None]
    if len(rules) != 1:
        raise ValueError("choose episodes by one of --episodes, --fraction or --instruction")
    if episodes is not None:
        return parse_episode_list(episodes, ds.num_episodes)
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ValueError(f"--fraction must be in (0, 1), got {fraction}")
        k = max(1, round(fraction * ds.num_episodes))
        return sorted(np.random.default_rng(seed).choice(ds.num_episodes, size=k, replace=False).tolist())
    texts = episode_instructions(ds)
    if all(t is None for t in texts):
        raise DatasetError(f"{ds.path}: its notes record no instructions per episode")
    chosen = [i for i, t in enumerate(texts) if t is not None and instruction.lower() in t.lower()]
    if not chosen:
        known = ", ".join(repr(t) for t in dict.fromkeys(texts) if t is not None)
        raise ValueError(f"no episode's instruction contains {instruction!r}; the instructions are {known}")
    return chosen


def _notes(sources: Sequence[tuple[Dataset, list[int]]], operation: str) -> dict[str, Any]:
    """The first source's notes, with per-episode instructions re-indexed over every kept episode and
    ``derived`` recording the operation and where each episode came from."""
    notes = dict(sources[0][0].notes)
    texts: list[str] = []
    index: list[int] = []
    for ds, kept in sources:
        per_episode = episode_instructions(ds)
        for i in kept:
            if per_episode[i] is not None:
                if per_episode[i] not in texts:
                    texts.append(per_episode[i])
                index.append(texts.index(per_episode[i]))
    if len(index) == sum(len(kept) for _, kept in sources) and texts:
        notes.update(instructions=texts, episode_instructions=index)
    else:
        notes.pop("instructions", None)
        notes.pop("episode_instructions", None)
    notes["derived"] = {
        "operation": operation,
        "sources": [{"path": str(ds.path), "episodes": kept, "notes": ds.notes} for ds, kept in sources],
    }
    return notes


def _episodes(sources: Sequence[tuple[Dataset, list[int]]]) -> Iterator[dict[str, np.ndarray]]:
    for ds, kept in sources:
        for i in kept:
            yield ds.episode(i)


def write_subset(
    ds: Dataset, kept: Sequence[int], out: Path, operation: str, overwrite: bool = False,
    on_episode: Callable[[int, int], None] | None = None,
) -> Path:
    """The episodes ``kept`` of ``ds`` as a new dataset at ``out``."""
    if Path(out).resolve() == ds.path.resolve():
        raise ValueError(f"{out}: write to a new path, not over the source dataset")
    sources = [(ds, list(kept))]
    return write_dataset(out, ds.spec, _episodes(sources), _notes(sources, operation), overwrite, on_episode)


def merge_datasets(
    datasets: Sequence[Dataset], out: Path, overwrite: bool = False,
    on_episode: Callable[[int, int], None] | None = None,
) -> Path:
    """Every episode of ``datasets``, in order, as one dataset at ``out``; their specs must be equal.
    One sharded dataset (:mod:`hpt_kit.data.shards`) becomes one store."""
    if len(datasets) < 2 and not hasattr(datasets[0], "shards"):
        raise ValueError("merge needs at least two datasets, or one sharded dataset")
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.spec.to_dict() != first.spec.to_dict():
            differ = sorted(k for k, v in ds.spec.to_dict().items() if first.spec.to_dict().get(k) != v)
            raise DatasetError(f"{ds.path}: its spec differs from {first.path}'s ({', '.join(differ)}); merge needs equal specs")
    if any(Path(out).resolve() == ds.path.resolve() for ds in datasets):
        raise ValueError(f"{out}: write to a new path, not over a source dataset")
    sources = [(ds, list(range(ds.num_episodes))) for ds in datasets]
    return write_dataset(out, first.spec, _episodes(sources), _notes(sources, "merge"), overwrite, on_episode)
