"""What a pre-training run will cost, before it starts (``hpt-kit pretrain RECIPE --plan``).

Reads only dataset metadata (episode boundaries, array shapes, file sizes): nothing is converted,
imported or trained. Per dataset: episodes, steps, the training windows the run draws from, the
trunk tokens per sample (every stem's tokens, an image stem's per view), its share of the samples
(the mixture weights), the epochs that share makes at the recipe's steps and batch, the size on
disk and what it takes in memory. Then totals, a wall-time estimate from a stated throughput
figure, memory per rank with and without ``[train] stream``, and each missing dataset with the
command that makes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.core.recipe import DatasetEntry, Recipe
from hpt_kit.core.spec import IMAGE, IMAGE_FEATURES, EmbodimentData

# Measured training throughput of the bench's standard model per trunk preset: (samples/s, where).
BENCH_FIGURES: dict[str, tuple[float, str]] = {
    "xlarge": (5700.0, "one H100, `hpt-kit bench --preset xlarge --batch 256 --compile` (README, Benchmarks)"),
}
MB = 1024 * 1024


@dataclass(frozen=True)
class Missing:
    """A dataset the run needs that is not on disk: how to make it, and what is known of it."""

    command: str
    episodes: int = 0  # 0: unknown
    tokens_per_sample: int = 0  # 0: unknown
    note: str = ""


@dataclass(frozen=True)
class DatasetPlan:
    embodiment: str
    path: str
    present: bool
    weight: float
    share: float  # of all samples drawn
    samples: int  # samples drawn from it over the run
    episodes: int  # 0 when missing and unknown
    steps: int  # 0 when missing
    train_windows: int  # steps of its training episodes (the windows it draws from); 0 when missing
    tokens_per_sample: int  # 0 when unknown
    tokens: int  # tokens through the trunk for its samples
    epochs: float  # samples / train_windows; 0 when unknown
    disk_bytes: int
    memory_bytes: int  # its fields loaded whole (the in-memory sampler), on every rank
    missing: Missing | None = None


@dataclass(frozen=True)
class RunPlan:
    recipe: str
    trunk: str
    steps: int
    batch_size: int
    ranks: int
    datasets: tuple[DatasetPlan, ...]
    samples: int
    tokens: int
    disk_bytes: int
    memory_in_memory_bytes: int  # per rank, stream = false: every dataset's fields loaded whole
    memory_streaming_bytes: int  # per rank, stream = true: stream_memory_mb per dataset
    stream: bool  # what the recipe asks for
    samples_per_s: float  # 0: no figure
    throughput_source: str
    wall_seconds: float  # 0: no figure
    missing: tuple[tuple[str, str], ...]  # (embodiment, command)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def stem_tokens(spec: EmbodimentData) -> int:
    """Tokens one sample puts through the trunk: each stem's ``num_tokens``, an image stem's per view."""
    image = spec.observation.image
    views = len(image.views) if image is not None else 1
    return sum(s.num_tokens * (views if s.modality in (IMAGE, IMAGE_FEATURES) else 1) for s in spec.stems)


def dataset_path(entry: DatasetEntry) -> Path:
    from hpt_kit.data.convert import default_dataset_path

    return Path(entry.path) if entry.path else default_dataset_path(entry.embodiment)


def disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def plan_run(
    recipe: Recipe,
    missing: Callable[[DatasetEntry], Missing],
    *,
    ranks: int = 1,
    samples_per_s: float = 0.0,
) -> RunPlan:
    """The plan of ``recipe``; ``missing(entry)`` says how to make a dataset that is not on disk.
    ``samples_per_s`` (0: the bench figure for the recipe's trunk preset, if there is one) is the
    throughput of one rank."""
    cfg = recipe.train
    total = cfg.steps * cfg.batch_size
    weights = np.array([e.weight for e in recipe.datasets], dtype=np.float64)
    shares = weights / weights.sum()
    rows = [_dataset_plan(recipe, e, float(s), int(round(total * s)), missing) for e, s in zip(recipe.datasets, shares)]
    source = "given on the command line"
    if not samples_per_s and recipe.trunk.preset in BENCH_FIGURES:
        samples_per_s, source = BENCH_FIGURES[recipe.trunk.preset]
        source = f"{recipe.trunk.preset}: {samples_per_s:,.0f} samples/s on {source}"
    elif not samples_per_s:
        source = f"no bench figure for preset {recipe.trunk.preset!r}: pass --samples-per-s from `hpt-kit bench --preset {recipe.trunk.preset}`"
    wall = total / (samples_per_s * ranks) if samples_per_s else 0.0
    streaming = int(cfg.stream_memory_mb * MB) * len(rows)
    return RunPlan(
        recipe=recipe.source,
        trunk=recipe.trunk.preset,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        ranks=ranks,
        datasets=tuple(rows),
        samples=total,
        tokens=sum(r.tokens for r in rows),
        disk_bytes=sum(r.disk_bytes for r in rows),
        memory_in_memory_bytes=sum(r.memory_bytes for r in rows),
        memory_streaming_bytes=streaming,
        stream=cfg.stream,
        samples_per_s=samples_per_s,
        throughput_source=source,
        wall_seconds=wall,
        missing=tuple((r.embodiment, r.missing.command) for r in rows if r.missing is not None),
    )


def _dataset_plan(recipe: Recipe, entry: DatasetEntry, share: float, samples: int, missing: Callable[[DatasetEntry], Missing]) -> DatasetPlan:
    from hpt_kit.data.store import Dataset, DatasetError

    path = dataset_path(entry)
    try:
        ds = Dataset(path) if path.exists() else None
    except DatasetError:
        ds = None
    if ds is None:
        gap = missing(entry)
        tokens = gap.tokens_per_sample
        return DatasetPlan(
            entry.embodiment, str(path), False, entry.weight, share, samples, gap.episodes, 0, 0,
            tokens, samples * tokens, 0.0, 0, 0, gap,
        )  # fmt: skip
    from hpt_kit.core.spec import ACTION, STATE
    from hpt_kit.data.sampler import split_episodes
    from hpt_kit.train.setup import run_spec

    spec = run_spec(ds.spec, entry)
    n = min(entry.max_episodes, ds.num_episodes) if entry.max_episodes else ds.num_episodes
    train_eps, _ = split_episodes(n, recipe.train.val_fraction, recipe.run.seed, recipe.train.val_min_episodes, entry.val_episodes)
    lengths = ds.episode_ends - ds.episode_starts
    windows = int(lengths[train_eps].sum())
    fields = {s.modality for s in spec.stems} | {STATE, ACTION}
    memory = sum(_nbytes(ds.array(f)) for f in fields if f in ds.fields())
    tokens = stem_tokens(spec)
    return DatasetPlan(
        entry.embodiment, str(path), True, entry.weight, share, samples, n, int(lengths[:n].sum()), windows,
        tokens, samples * tokens, samples / windows if windows else 0.0, disk_size(path), memory,
    )  # fmt: skip


def _nbytes(array: Any) -> int:
    return int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize
