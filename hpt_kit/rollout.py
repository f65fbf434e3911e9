"""Pieces every simulator plugin's episode loop needs, so each plugin writes only its own loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def episode_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per episode: ``key`` is e.g. (stream, index), with one stream for
    conversion and another for rollouts, so evaluation never replays a training episode."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def checked_action(action: object, dim: int, name: str) -> np.ndarray:
    """A controller's action as float32 (dim,), clipped to [-1, 1]; a wrong shape or a non-finite
    value is an error naming the embodiment."""
    arr = np.asarray(action, dtype=np.float32).reshape(-1)
    if arr.shape != (dim,):
        raise ValueError(f"{name}: controller returned an action of shape {arr.shape}, expected ({dim},)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: controller returned a non-finite action {arr}")
    return np.clip(arr, -1.0, 1.0)


@dataclass
class EpisodeLog:
    """What one episode's controller saw and did, plus its outcome."""

    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # video frames, not part of the episode
    episode_return: float = 0.0
    success: bool = False

    def to_episode(self) -> dict[str, np.ndarray]:
        episode = {"state": np.stack(self.states), "action": np.stack(self.actions)}
        if self.images:
            episode["image"] = np.stack(self.images)
        return episode
