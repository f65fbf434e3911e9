"""The scripted expert: damped least-squares inverse kinematics on MuJoCo's end-effector Jacobian.

It is a :class:`hpt_kit.Controller` with privileged access to the environment (it reads the Jacobian
and the target from the simulator, not from the observation), so dataset conversion and
``expert_rollout`` drive it through the same loop as a learned policy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hpt_kit_mujoco.reach import ReachEnv


class ReachExpert:
    """Moves the end effector a fixed fraction of the remaining error per control step."""

    def __init__(self, env: ReachEnv, gain: float = 0.8, damping: float = 0.05, centering: float = 0.1):
        self.env = env
        self.gain = gain  # fraction of the Cartesian error to remove per step
        self.damping = damping  # metres; keeps joint steps bounded near singular poses
        self.centering = centering  # pull (per step) towards mid-range, in the task's null space
        low, high = env.model.jnt_range.T
        self._mid = (low + high) / 2

    def reset(self) -> None:
        pass

    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        error = self.env.target_pos - self.env.ee_pos
        jac = self.env.jacobian()
        lhs = jac @ jac.T + self.damping**2 * np.eye(3)
        pinv = jac.T @ np.linalg.inv(lhs)  # (joints, 3) damped pseudo-inverse
        null = np.eye(self.env.n) - pinv @ jac
        q = self.env.data.qpos
        dq = pinv @ (self.gain * error) - null @ (self.centering * (q - self._mid))
        action = dq / self.env.task.max_delta
        # Scale the whole vector rather than clipping each joint, so the Cartesian direction survives.
        peak = np.abs(action).max()
        if peak > 1.0:
            action = action / peak
        return action.astype(np.float32)
