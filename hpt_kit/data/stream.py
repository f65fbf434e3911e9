"""Sampling from a dataset larger than memory, with memory use independent of the dataset's size.

:class:`BlockSampler` keeps ``blocks`` random contiguous stretches of ``block_steps`` steps in memory
and draws training windows from them. A reading process (:mod:`hpt_kit.data.reader`) reads the next
stretch while batches are assembled from the current ones; every ``refresh`` batches one stretch is
swapped for the prefetched one. Windows are clamped at episode edges like
:class:`~hpt_kit.data.sampler.SequenceSampler`'s and never at a stretch's ends: a step is drawn from a
stretch only if its whole window (clamped to its episode) lies inside the stretch, so no window sees
a made-up pause where the stretch, not the episode, ends. Stretches are placed at random, so every
step is drawn from some of them.

Given ``episodes`` (a run's training episodes, or one rank's share of them), windows are drawn only
at steps of those episodes, and every stretch is placed to hold at least one of their steps. Given
``readers`` (a run's :class:`~hpt_kit.data.reader.ReaderPool`), a process of the pool reads the
stretches, shared with the run's other streamed datasets; without, a process of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hpt_kit.core.spec import ACTION
from hpt_kit.data.gather import gather_rows
from hpt_kit.data.reader import ReaderPool, StretchReader
from hpt_kit.data.store import Dataset


@dataclass(frozen=True)
class Streaming:
    """How a training run streams a dataset: ``blocks`` stretches in memory, plus the one being read,
    sharing ``memory_mb``; one replaced every ``refresh`` batches (0: whenever the disk has delivered
    the next one)."""

    memory_mb: float = 512.0
    blocks: int = 8
    refresh: int = 4

    def block_steps(self, step_bytes: int) -> int:
        """Steps per stretch for steps of ``step_bytes`` bytes (all fields read), at least 32."""
        return max(32, int(self.memory_mb * 2**20) // ((self.blocks + 1) * max(1, step_bytes)))


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
        seed: int | Sequence[int] = 0,
        episodes: Sequence[int] | np.ndarray | None = None,
        readers: ReaderPool | None = None,
    ):
        self.dataset = dataset
        self.obs_fields = [f for f in fields if f != ACTION]
        self.fields = [*self.obs_fields, ACTION]
        self.arrays = {f: dataset.array(f) for f in self.fields}
        self.H, self.K = observation_horizon, action_horizon
        # At least two whole windows per stretch, so that a stretch always holds usable steps.
        self.block_steps = min(dataset.num_steps, max(block_steps, 2 * (observation_horizon + action_horizon)))
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
        # One buffer per stretch plus one for the stretch being read, filled by a reading process.
        n_slots = max(1, blocks)
        layout = {f: (np.dtype(a.dtype), tuple(a.shape[1:])) for f, a in self.arrays.items()}
        self._reader = StretchReader(dataset.path, layout, self.block_steps, n_slots + 1, pool=readers)
        self._slots = []
        for buffer in range(n_slots):
            self._slots.append(self._read_now(buffer, self._random_start()))
        self._free = n_slots  # the buffer the next stretch is read into
        self._next_start = 0
        self._prefetch(self._random_start())

    def _random_start(self) -> int:
        """The first step of a stretch around a uniformly drawn step of the chosen episodes, placed so
        that the step's whole window lies inside it."""
        k = int(self.rng.integers(self._chosen_offsets[-1]))
        e = int(np.searchsorted(self._chosen_offsets, k, side="right")) - 1
        step = int(self._chosen_starts[e]) + k - int(self._chosen_offsets[e])
        slack = self.block_steps - (self.H + self.K - 1)  # >= 0: a window fits at any of these offsets
        start = step - (self.H - 1) - int(self.rng.integers(slack + 1))
        return min(max(0, start), self.dataset.num_steps - self.block_steps)

    def _stop(self, start: int) -> int:
        return min(self.dataset.num_steps, start + self.block_steps)

    def _read_now(self, buffer: int, start: int) -> tuple[int, dict[str, np.ndarray], np.ndarray, int]:
        """Read a stretch into ``buffer`` and wait for it (no other read may be in flight)."""
        self._reader.request(buffer, start, self._stop(start))
        self._reader.wait()
        return self._arrived(buffer, start)

    def _arrived(self, buffer: int, start: int) -> tuple[int, dict[str, np.ndarray], np.ndarray, int]:
        """A stretch read into ``buffer``: its first step, its rows, the offsets in it of the chosen
        episodes' steps, and the buffer."""
        stop = self._stop(start)
        block = self._reader.views(buffer, stop - start)
        t = np.arange(start, stop)
        ep = np.searchsorted(self.ends, t, side="right")
        # A step's window, clamped to its episode, must lie inside the stretch.
        inside = (np.maximum(t - self.H + 1, self.starts[ep]) >= start) & (np.minimum(t + self.K, self.ends[ep]) <= stop)
        usable = np.flatnonzero(self._chosen[ep] & inside)
        self.steps_read += stop - start
        return start, block, usable, buffer

    def _prefetch(self, start: int) -> None:
        self._next_start = start
        self._reader.request(self._free, start, self._stop(start))

    def _swap(self) -> None:
        """The prefetched stretch replaces a random one, whose buffer receives the next read."""
        self._reader.wait()
        slot = int(self.rng.integers(len(self._slots)))
        arrived = self._arrived(self._free, self._next_start)
        self._free = self._slots[slot][3]
        self._slots[slot] = arrived
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
        # Each stretch fills a contiguous run of rows, gathered straight into it (one copy), with a
        # core left to the reading process.
        threads = max(1, torch.get_num_threads() - 1)
        offset = 0
        for (start, data, usable, _), count in zip(self._slots, counts):
            if not count:
                continue
            rows = slice(offset, offset + count)
            offset += count
            t = start + usable[rng.integers(0, len(usable), size=count)]  # global step of each window
            ep = np.searchsorted(self.ends, t, side="right")
            # Clamp to the episode (the window lies inside the stretch: see _arrived).
            lo = self.starts[ep] - start
            hi = self.ends[ep] - 1 - start
            local = t - start
            obs_idx = np.clip(local[:, None] + np.arange(-self.H + 1, 1), lo[:, None], hi[:, None])
            act_idx = np.clip(local[:, None] + np.arange(self.K), lo[:, None], hi[:, None])
            for f in self.obs_fields:
                gather_rows(data[f], obs_idx, out=out[f][rows], threads=threads)
            gather_rows(data[ACTION], act_idx, out=out[ACTION][rows], threads=threads)
            self.served += count
        return out

    def state(self) -> dict[str, Any]:
        """What :meth:`load_state` needs to continue exactly here (JSON-serialisable): where the
        stretches in memory and the one being read start, the stretch-choosing generator, the call count."""
        return {
            "block_steps": self.block_steps,
            "slots": [slot[0] for slot in self._slots],
            "next": self._next_start,
            "rng": self.rng.bit_generator.state,
            "calls": self._calls,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Re-read the stretches of a :meth:`state` and continue from it (exact when ``refresh`` > 0)."""
        if len(state["slots"]) != len(self._slots) or state.get("block_steps") != self.block_steps:
            raise ValueError(
                f"the saved state holds {len(state['slots'])} stretches of {state.get('block_steps')} steps, "
                f"this sampler {len(self._slots)} of {self.block_steps}"
            )
        last = self.dataset.num_steps - self.block_steps
        if not all(0 <= int(x) <= last for x in [*state["slots"], state["next"]]):
            raise ValueError(f"the saved stretches do not fit {self.dataset.path} ({self.dataset.num_steps} steps)")
        self._reader.wait()  # the read in flight, into the free buffer
        for i, start in enumerate(state["slots"]):
            self._slots[i] = self._read_now(self._slots[i][3], int(start))
        self.rng.bit_generator.state = state["rng"]
        self._calls = int(state["calls"])
        self._prefetch(int(state["next"]))

    def _ready(self) -> bool:
        """Whether the stretch being read has arrived (never waits for it)."""
        return self._reader.ready()

    def reuse(self) -> float:
        """Windows served per step read from disk so far: how often each step in memory was used."""
        return self.served / max(1, self.steps_read)

    def resident_bytes(self) -> int:
        """Bytes of the buffers for the stretches in memory and the one being read."""
        return self._reader.nbytes

    def close(self) -> None:
        """Free its buffers, here and in the reading process, and stop that process if it is the
        sampler's own (also done when the sampler is collected). The sampler cannot sample afterwards."""
        self._slots = []
        self._reader.close()
