"""MuJoCo reaching arms as hpt-kit embodiments: ``mujoco-arm3``, ``mujoco-arm4`` and ``mujoco-arm3-rgb``."""

__version__ = "0.1.0"
