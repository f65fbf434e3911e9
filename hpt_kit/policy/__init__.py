"""Inference: a trained network driving a robot in closed loop."""

from hpt_kit.policy.closed_loop import Policy

__all__ = ["Policy"]
