"""Sampling from a dataset larger than memory, with memory use independent of the dataset's size.

:class:`BlockSampler` keeps ``blocks`` random contiguous stretches of ``block_steps`` steps in memory
and draws training windows from them. A background thread reads the next stretch while batches are
assembled from the current ones; every ``refresh`` batches one stretch is swapped for the prefetched
one. Windows are clamped at episode edges like :class:`~hpt_kit.data.sampler.SequenceSampler`'s, and
also at the two ends of a stretch (rows beyond it are not in memory): with stretches of thousands of
steps that touches a fraction of about (H + K) / block_steps of the windows.

Given ``episodes`` (a run's training episodes, or one rank's share of them), windows are drawn only
at steps of those episodes, and every stretch is placed to hold at least one of their steps.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpt_kit.data.store import Dataset
from hpt_kit.embodiment import ACTION


@dataclass(frozen=True)
class Streaming:
    """How a training run streams a dataset: ``blocks`` stretches of ``block_steps`` steps in memory,
    one replaced every ``refresh`` batches (0: whenever the disk has delivered the next one)."""

    block_steps: int = 4096
    blocks: int = 8
    refresh: int = 4


class BlockSampler:
    """``refresh`` > 0: every ``refresh`` batches one stretch is swapped for the prefetched one
    (waiting for it if need be; reproducible for a seed, and resumable with :meth:`state`).
    ``refresh`` = 0: a stretch is swapped in whenever the background read has finished, so sampling
    never waits for the disk; how often each step is reused then depends on the disk's speed (see
    :meth:`reuse`)."""

    def __init__(
        self,
        dataset: Dataset,
        observation_horizon: int,
        action_horizon: int,
        fields: Sequence[str],
        block_steps: int = 1024,
        blocks: int = 4,
        refresh: int = 4,
        seed: int = 0,
        episodes: Sequence[int] | np.ndarray | None = None,
    ):
        self.dataset = dataset
        self.obs_fields = [f for f in fields if f != ACTION]
        self.fields = [*self.obs_fields, ACTION]
        self.arrays = {f: dataset.array(f) for f in self.fields}
        self.H, self.K = observation_horizon, action_horizon
        self.block_steps = min(dataset.num_steps, block_steps)
        self.refresh = refresh
        self.rng = np.random.default_rng(seed)
        self.ends = dataset.episode_ends
        self.starts = dataset.episode_starts
        self.stats: dict | None = None  # normaliser statistics, set by make_samplers
        chosen = np.arange(dataset.num_episodes) if episodes is None else np.unique(np.asarray(episodes, dtype=np.int64))
        if not len(chosen):
            raise ValueError(f"{dataset.path}: no episodes to sample from")
        self._chosen = np.zeros(dataset.num_episodes, dtype=bool)
        self._chosen[chosen] = True
        # The chosen episodes' steps, numbered 0..n-1 in order: a uniform draw picks a step of them.
        self._chosen_starts = self.starts[chosen]
        self._chosen_offsets = np.concatenate([[0], np.cumsum(self.ends[chosen] - self.starts[chosen])])
        self.served = self.steps_read = 0
        self._calls = 0
        self._slots = [self._read(self._random_start()) for _ in range(max(1, blocks))]
        self._next: tuple | BaseException | None = None
        self._next_start = 0
        self._thread: threading.Thread | None = None
        self._prefetch(self._random_start())

    def _random_start(self) -> int:
        """The first step of a stretch around a uniformly drawn step of the chosen episodes."""
        k = int(self.rng.integers(self._chosen_offsets[-1]))
        e = int(np.searchsorted(self._chosen_offsets, k, side="right")) - 1
        step = int(self._chosen_starts[e]) + k - int(self._chosen_offsets[e])
        start = step - int(self.rng.integers(self.block_steps))
        return min(max(0, start), self.dataset.num_steps - self.block_steps)

    def _read(self, start: int) -> tuple[int, dict[str, np.ndarray], np.ndarray]:
        """One stretch: its first step, its rows, and the offsets in it of the chosen episodes' steps."""
        stop = min(self.dataset.num_steps, start + self.block_steps)
        block = {f: np.asarray(self.arrays[f][start:stop]) for f in self.fields}
        usable = np.flatnonzero(self._chosen[np.searchsorted(self.ends, np.arange(start, stop), side="right")])
        self.steps_read += stop - start
        return start, block, usable

    def _prefetch(self, start: int) -> None:
        self._next_start = start

        def work() -> None:
            try:
                self._next = self._read(start)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread by _swap
                self._next = exc

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def _swap(self) -> None:
        assert self._thread is not None
        self._thread.join()
        block, self._next = self._next, None
        if isinstance(block, BaseException):
            raise RuntimeError(f"{self.dataset.path}: reading the next block failed: {block}") from block
        assert block is not None
        self._slots[int(self.rng.integers(len(self._slots)))] = block
        self._prefetch(self._random_start())

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of windows: obs fields (B, H, ...) and action (B, K, A), drawn from the stretches in memory."""
        self._calls += 1
        if (self.refresh and self._calls % self.refresh == 0) or (not self.refresh and self._ready()):
            self._swap()
        counts = np.bincount(rng.integers(len(self._slots), size=batch_size), minlength=len(self._slots))
        first = self._slots[0][1]
        out = {
            f: np.empty((batch_size, self.K if f == ACTION else self.H, *first[f].shape[1:]), first[f].dtype)
            for f in self.fields
        }
        # Each stretch fills a contiguous run of rows; np.take writes there directly (one copy).
        offset = 0
        for (start, data, usable), count in zip(self._slots, counts):
            if not count:
                continue
            rows = slice(offset, offset + count)
            offset += count
            n = len(data[ACTION])
            t = start + usable[rng.integers(0, len(usable), size=count)]  # global step of each window
            ep = np.searchsorted(self.ends, t, side="right")
            # Clamp to the episode and to the stretch (rows outside it are not in memory).
            lo = np.maximum(self.starts[ep], start) - start
            hi = np.minimum(self.ends[ep], start + n) - 1 - start
            local = t - start
            obs_idx = np.clip(local[:, None] + np.arange(-self.H + 1, 1), lo[:, None], hi[:, None])
            act_idx = np.clip(local[:, None] + np.arange(self.K), lo[:, None], hi[:, None])
            for f in self.obs_fields:
                np.take(data[f], obs_idx, axis=0, out=out[f][rows], mode="clip")
            np.take(data[ACTION], act_idx, axis=0, out=out[ACTION][rows], mode="clip")
            self.served += count
        return out

    def state(self) -> dict[str, Any]:
        """What :meth:`load_state` needs to continue exactly here (JSON-serialisable): where the
        stretches in memory and the one being read start, the stretch-choosing generator, the call count."""
        return {
            "slots": [start for start, _, _ in self._slots],
            "next": self._next_start,
            "rng": self.rng.bit_generator.state,
            "calls": self._calls,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Re-read the stretches of a :meth:`state` and continue from it (exact when ``refresh`` > 0)."""
        if self._thread is not None:
            self._thread.join()
        self._next = None
        if len(state["slots"]) != len(self._slots):
            raise ValueError(f"the saved state holds {len(state['slots'])} stretches, this sampler {len(self._slots)}")
        self._slots = [self._read(int(start)) for start in state["slots"]]
        self.rng.bit_generator.state = state["rng"]
        self._calls = int(state["calls"])
        self._prefetch(int(state["next"]))

    def _ready(self) -> bool:
        """Whether the stretch being read in the background has arrived (never waits for it)."""
        return self._thread is not None and not self._thread.is_alive()

    def reuse(self) -> float:
        """Windows served per step read from disk so far: how often each step in memory was used."""
        return self.served / max(1, self.steps_read)

    def resident_bytes(self) -> int:
        return sum(a.nbytes for _, data, _ in self._slots for a in data.values())
