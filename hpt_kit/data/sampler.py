"""Training samples: an observation history and an action chunk, assembled a whole batch at a time.

A sample at step t of an episode [s, e) holds observations at t-H+1 .. t and actions at t .. t+K-1
(H = observation_horizon, K = action_horizon). Indices outside the episode are clamped to its edge:
the history before the first step repeats the first observation and the chunk past the last step
repeats the last action (the robot holds still). Windows never cross episode boundaries.

Training samples come from :class:`SequenceSampler` over arrays loaded into memory, or, for datasets
larger than memory (``[train] stream``), from :class:`~hpt_kit.data.stream.BlockSampler`, which keeps a
few stretches of steps in memory. Validation reads the same way either way: in order, and in
stream mode straight from disk, each run of consecutive rows once.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hpt_kit.core.spec import ACTION, STATE
from hpt_kit.data.gather import gather_rows
from hpt_kit.data.reader import ReaderPool
from hpt_kit.data.store import Dataset, RunningStats
from hpt_kit.data.stream import BlockSampler, Streaming

STATS_ROWS = 1 << 16  # rows of state and action read at a time for streamed normaliser statistics


def split_episodes(
    num_episodes: int, val_fraction: float, seed: int, min_val: int = 1, chosen: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation episode indices.

    ``chosen``: the held-out episodes named (indices below ``num_episodes``); the rest train. Otherwise
    a seeded shuffle holds out ``val_fraction`` of them, and whenever there are two or more episodes
    and ``val_fraction`` > 0 at least one, and at least ``min_val`` as long as two thirds of the
    episodes still train (an interval over held-out episodes needs several of them)."""
    if len(chosen):
        val = np.unique(np.asarray(chosen, dtype=np.int64))
        bad = [int(e) for e in val if not 0 <= e < num_episodes]
        if bad:
            raise ValueError(f"val_episodes: episode {bad[0]} is not among the {num_episodes} episodes the run uses (0 to {num_episodes - 1})")
        if len(val) >= num_episodes:
            raise ValueError(f"val_episodes: holds out all {num_episodes} episodes; leave at least one to train on")
        return np.setdiff1d(np.arange(num_episodes), val), val
    order = np.random.default_rng(seed).permutation(num_episodes)
    n_val = int(round(val_fraction * num_episodes))
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, min(min_val, num_episodes // 3), 1), num_episodes - 1)
    else:
        n_val = 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def mask_history(
    batch: dict[str, np.ndarray], fields: Sequence[str], prob: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random observation-horizon masking: each sample, with probability ``prob``, keeps only its
    newest k of H history steps (k uniform in 1..H-1) and sees the oldest kept step repeated in place of
    the older ones: what it would see k steps into an episode. Teaches a policy not to lean on the
    far past. ``batch`` fields are (B, H, ...); returns a new dict, the input is not modified."""
    out = dict(batch)
    present = [f for f in fields if f in batch and batch[f].shape[1] > 1]
    if prob <= 0 or not present:
        return out
    B, H = batch[present[0]].shape[:2]
    masked = rng.random(B) < prob  # (B,)
    first = np.where(masked, rng.integers(1, H, size=B), 0)  # (B,) index of the oldest step kept
    idx = np.maximum(np.arange(H)[None, :], first[:, None])  # (B, H)
    rows = np.arange(B)[:, None]
    for f in present:
        out[f] = batch[f][rows, idx]
    return out


def take_rows(array: Any, index: np.ndarray) -> np.ndarray:
    """``array[index]`` for an integer index array of any shape. A numpy array is indexed directly; an
    on-disk (zarr) array is read once per run of consecutive rows the index touches, not per element."""
    if isinstance(array, np.ndarray):
        return gather_rows(array, index)
    rows = np.unique(index)
    runs = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    data = np.concatenate([np.asarray(array[int(r[0]) : int(r[-1]) + 1]) for r in runs])  # row i is rows[i]
    return gather_rows(data, np.searchsorted(rows, index))


class SequenceSampler:
    """Windows over the steps of some episodes of one dataset. Its arrays are numpy arrays in memory
    or the dataset's on-disk arrays (read per batch, for validation of datasets larger than memory)."""

    def __init__(
        self,
        dataset: Dataset,
        episodes: Sequence[int] | np.ndarray,
        observation_horizon: int,
        action_horizon: int,
        fields: Sequence[str],
        arrays: Mapping[str, np.ndarray] | None = None,
    ):
        assert observation_horizon >= 1 and action_horizon >= 1
        self.dataset = dataset
        self.observation_horizon = observation_horizon
        self.action_horizon = action_horizon
        self.obs_fields = [f for f in fields if f != ACTION]
        self.stats: dict | None = None  # normaliser statistics of the episodes it samples, when computed
        # Arrays may be shared between the train and validation sampler of one dataset.
        self.arrays: dict[str, Any] = (
            dict(arrays) if arrays is not None else {f: dataset.load(f) for f in (*self.obs_fields, ACTION)}
        )
        episodes = np.asarray(episodes, dtype=np.int64)
        starts, ends = dataset.episode_starts[episodes], dataset.episode_ends[episodes]
        lengths = ends - starts
        # One sample per step of every chosen episode, with its episode's bounds.
        self.index = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(episodes) else np.zeros(0, np.int64)
        self.start = np.repeat(starts, lengths)
        self.last = np.repeat(ends - 1, lengths)
        self._obs_offsets = np.arange(-observation_horizon + 1, 1)  # (H,)
        self._act_offsets = np.arange(action_horizon)  # (K,)

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Samples at positions ``rows`` of this sampler: obs fields (B, H, ...), action (B, K, A)."""
        t = self.index[rows][:, None]
        lo, hi = self.start[rows][:, None], self.last[rows][:, None]
        obs_idx = np.clip(t + self._obs_offsets, lo, hi)  # (B, H)
        act_idx = np.clip(t + self._act_offsets, lo, hi)  # (B, K)
        out = {f: take_rows(self.arrays[f], obs_idx) for f in self.obs_fields}
        out[ACTION] = take_rows(self.arrays[ACTION], act_idx)
        return out

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self.batch(rng.integers(0, len(self), size=batch_size))

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Every sample once, in order (validation); at most ``limit`` batches."""
        for n, i in enumerate(range(0, len(self), batch_size)):
            if limit is not None and n >= limit:
                return
            yield self.batch(np.arange(i, min(i + batch_size, len(self))))


def make_samplers(
    dataset: Dataset,
    observation_horizon: int,
    action_horizon: int,
    fields: Sequence[str],
    val_fraction: float,
    seed: int,
    max_episodes: int | None = None,
    shard: tuple[int, int] = (0, 1),
    stream: Streaming | None = None,
    held_out: Sequence[int] = (),
    min_val: int = 1,
    readers: ReaderPool | None = None,
) -> tuple[SequenceSampler | BlockSampler, SequenceSampler | None]:
    """Train and validation samplers over one dataset, split by episode.

    ``max_episodes`` keeps only the first that many episodes (e.g. K demonstrations for transfer).
    ``held_out`` and ``min_val`` choose the validation episodes as :func:`split_episodes` does.
    ``shard = (rank, world)`` gives each process its share of the training episodes; validation is
    not sharded. In memory every world-th episode from the rank-th on; with ``stream`` a contiguous
    1/world of them, so that a rank's stretches read from disk hold mostly its own episodes.

    ``stream``: the training sampler is a :class:`BlockSampler` reading stretches from disk and
    validation reads its batches from disk; nothing is loaded whole. The normaliser statistics are
    then computed in one pass over state and action, :data:`STATS_ROWS` rows at a time. ``readers``:
    the run's reading processes, shared by its streamed datasets (default: one of the sampler's own).
    """
    n = dataset.num_episodes if max_episodes is None else min(max_episodes, dataset.num_episodes)
    train_eps, val_eps = split_episodes(n, val_fraction, seed, min_val, held_out)
    wanted = [f for f in fields if f != ACTION]
    read = dataset.load if stream is None else dataset.array  # whole into memory, or lazily from disk
    arrays = {f: read(f) for f in {*wanted, STATE, ACTION}}
    stats = episode_statistics(dataset, arrays, train_eps)  # all ranks' training episodes alike
    rank, world = shard
    train_eps = train_eps[rank::world] if stream is None else np.array_split(train_eps, world)[rank]
    if not len(train_eps):
        raise ValueError(f"{dataset.path}: no training episodes for process {rank} of {world}; convert more episodes")
    train: SequenceSampler | BlockSampler
    if stream is None:
        train = SequenceSampler(dataset, train_eps, observation_horizon, action_horizon, wanted, arrays)
    else:
        train = BlockSampler(
            dataset,
            observation_horizon,
            action_horizon,
            wanted,
            block_steps=stream.block_steps(sum(_step_bytes(arrays[f]) for f in {*wanted, ACTION})),
            blocks=stream.blocks,
            refresh=stream.refresh,
            seed=[seed, rank, zlib.crc32(dataset.name.encode())],  # distinct per run seed, rank and dataset
            episodes=train_eps,
            readers=readers,
        )
    train.stats = stats
    val = SequenceSampler(dataset, val_eps, observation_horizon, action_horizon, wanted, arrays) if len(val_eps) else None
    return train, val


def _step_bytes(array: Any) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) * np.dtype(array.dtype).itemsize


def episode_statistics(dataset: Dataset, arrays: Mapping[str, Any], episodes: np.ndarray) -> dict:
    """Normaliser statistics over some episodes only (a run's training episodes), in the dataset's
    format: summed from the episodes' stored raw moments (``episode_moments``), so the time taken
    does not grow with the number of steps. A dataset written before those were stored is read
    instead: state and action (``arrays``, in memory or on disk) in sequential slabs of
    :data:`STATS_ROWS` rows, so the memory used does not grow with the dataset."""
    stats = RunningStats(dataset.spec.observation.state_dim, dataset.spec.action.dim)
    chosen = np.zeros(dataset.num_episodes, dtype=bool)
    chosen[np.asarray(episodes, dtype=np.int64)] = True
    present = np.flatnonzero(chosen)
    if not len(present):
        raise ValueError(f"{dataset.path}: no episodes to compute normaliser statistics over")
    moments = dataset.episode_moments()
    if moments is not None:
        lengths = np.diff(dataset.episode_ends, prepend=0)
        stats.add_rows(moments[present], int(lengths[present].sum()))
        return stats.result()
    lo, hi = int(dataset.episode_starts[present[0]]), int(dataset.episode_ends[present[-1]])
    for a in range(lo, hi, STATS_ROWS):
        b = min(hi, a + STATS_ROWS)
        keep = chosen[np.searchsorted(dataset.episode_ends, np.arange(a, b), side="right")]
        if keep.any():
            stats.update({STATE: np.asarray(arrays[STATE][a:b])[keep], ACTION: np.asarray(arrays[ACTION][a:b])[keep]})
    return stats.result()
