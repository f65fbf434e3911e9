"""Meta-World's scripted expert for one task, as an :class:`hpt_kit.Controller`.

The policies in ``metaworld.policies`` are stateless functions of the 39-d observation, so the
expert reads exactly what a learned policy sees (the first 39 state values) and nothing from the
simulator; conversion and ``expert_rollout`` drive it through the same loop as any controller.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from hpt_kit_metaworld.tasks import SAWYER_OBS_DIM


class ScriptedExpert:
    def __init__(self, task: str):
        from metaworld.policies import ENV_POLICY_MAP

        self.task = task
        self._policy = ENV_POLICY_MAP[task]()

    def reset(self) -> None:
        pass

    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        obs = np.asarray(observation["state"][:SAWYER_OBS_DIM], dtype=np.float64)
        with warnings.catch_warnings():
            # The policies warn whenever a proportional term exceeds 1; the environment clips it.
            warnings.simplefilter("ignore", UserWarning)
            action = self._policy.get_action(obs)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
