"""Closed-loop control with a trained HPT network.

:class:`Policy` is what a rollout runner drives (the ``Controller`` protocol): it keeps the last
``observation_horizon`` observations in preallocated buffers, predicts an action chunk when its queue
is empty and executes ``execute_steps`` actions of it before predicting again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from hpt_kit.models.hpt import HPT


class Policy:
    def __init__(self, model: HPT, embodiment: str, execute_steps: int = 0, device: str | torch.device = "cpu"):
        if embodiment not in model.specs:
            raise KeyError(f"the model has no embodiment {embodiment!r}; it has: {', '.join(model.specs)}")
        self.model = model.to(device).eval()
        self.embodiment = embodiment
        self.spec = model.specs[embodiment]
        horizon = self.spec.action_horizon
        self.execute_steps = execute_steps if execute_steps > 0 else horizon
        if self.execute_steps > horizon:
            raise ValueError(f"execute_steps {execute_steps} exceeds the action horizon {horizon}")
        self.device = torch.device(device)
        shapes = self.spec.observation.field_shapes()
        H = self.spec.observation_horizon
        self._fields = [s.modality for s in self.spec.stems]
        self._history = {f: torch.zeros((1, H, *shapes[f]), device=self.device) for f in self._fields}
        self._queue: np.ndarray = np.zeros((0, self.spec.action.dim), dtype=np.float32)
        self._steps = 0

    @classmethod
    def from_checkpoint(cls, location: str | Path, embodiment: str | None = None, execute_steps: int = 0) -> Policy:
        from hpt_kit.train.checkpoint import resolve_checkpoint

        model = resolve_checkpoint(location).build_model()
        name = embodiment or next(iter(model.specs))
        return cls(model, name, execute_steps)

    def reset(self) -> None:
        self._queue = self._queue[:0]
        self._steps = 0

    @torch.inference_mode()
    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """One observation (unbatched, e.g. ``{"state": (S,)}``) -> one action (action_dim,)."""
        for f in self._fields:
            x = torch.as_tensor(observation[f], dtype=torch.float32, device=self.device)
            hist = self._history[f]
            if self._steps == 0:
                hist.copy_(x.expand_as(hist))  # the history before the first step repeats it
            else:
                hist[:, :-1] = hist[:, 1:].clone()
                hist[:, -1] = x
        self._steps += 1
        if len(self._queue) == 0:
            chunk = self.model.predict(self.embodiment, self._history)  # (1, K, A)
            self._queue = chunk[0, : self.execute_steps].cpu().numpy()
        action, self._queue = self._queue[0], self._queue[1:]
        return action
