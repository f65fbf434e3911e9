"""A robosuite environment seen through the embodiment's state vector and action.

robosuite is imported only when an environment is built or its version is asked for, never at module
level, so registering the embodiments never pays for it. Environments are built once and reset softly: a hard reset reloads the
whole MJCF model (about a second), a soft one restores the simulator state (milliseconds).
"""

from __future__ import annotations

import logging

import numpy as np

from hpt_kit_robosuite.robots import CONTROL_HZ, Robot, Task

MAKE_SEED = 0  # seeds what robosuite draws once per environment, e.g. the cube's size in Lift


class _QuietFilter(logging.Filter):
    """robosuite logs its import-time setup advice and every controller file it loads; keep errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _import_robosuite():
    logger = logging.getLogger("robosuite_logs")
    if not any(isinstance(f, _QuietFilter) for f in logger.filters):
        logger.addFilter(_QuietFilter())
    import robosuite

    return robosuite


def versions() -> dict[str, str]:
    import mujoco

    return {"robosuite_version": _import_robosuite().__version__, "mujoco_version": mujoco.__version__}


def controller_config(robot: Robot) -> dict:
    """The robot's default composite controller: OSC_POSE on the arm (deltas in the robot's base
    frame, at most 5 cm and 0.5 rad per step) and one gripper command."""
    robosuite = _import_robosuite()
    config = robosuite.load_composite_controller_config(controller="BASIC", robot=robot.robosuite_name)
    arm = config["body_parts"]["right"]
    assert arm["type"] == "OSC_POSE" and arm["input_type"] == "delta", arm
    return config


class SuiteEnv:
    """One robot in one task. ``reset(rng)`` draws a new episode; ``step`` applies one action."""

    def __init__(self, robot: Robot, task: Task):
        robosuite = _import_robosuite()
        self.robot, self.task = robot, task
        self.env = robosuite.make(
            task.robosuite_name,
            robots=robot.robosuite_name,
            controller_configs=controller_config(robot),
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
            use_object_obs=True,
            reward_shaping=True,
            control_freq=CONTROL_HZ,
            horizon=task.max_steps,
            ignore_done=True,  # the runner ends episodes
            hard_reset=False,
            seed=MAKE_SEED,
        )
        model = self.env.sim.model
        for geom in robot.disabled_collisions:
            gid = model.geom_name2id(geom)
            model._model.geom_contype[gid] = model._model.geom_conaffinity[gid] = 0
        self.action_dim = int(self.env.action_dim)
        self.obs: dict[str, np.ndarray] = {}

    @property
    def control_hz(self) -> float:
        return float(self.env.control_freq)

    @property
    def table_height(self) -> float:
        return float(self.env.model.mujoco_arena.table_offset[2])

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """Start an episode whose robot noise and object placement come from ``rng`` alone."""
        self._reseed(rng)
        self.obs = self.env.reset()
        return self.state()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Apply an action in [-1, 1]^action_dim; return (state, reward, success)."""
        self.obs, reward, _, _ = self.env.step(np.clip(action, -1.0, 1.0))
        return self.state(), float(reward), self.success()

    def success(self) -> bool:
        return bool(self.env._check_success())

    def half_height(self, obj: str) -> float:
        """Half the height of a box object, as robosuite drew it for this environment."""
        return float(getattr(self.env, obj).size[2])

    def grasping(self, obj: str) -> bool:
        """Whether both sides of the gripper touch the named object (robosuite's own contact test)."""
        return bool(
            self.env._check_grasp(gripper=self.env.robots[0].gripper, object_geoms=getattr(self.env, obj))
        )

    def state(self) -> np.ndarray:
        """[sin q, cos q, qdot, eef xyz, eef quat (xyzw), gripper qpos, per object: xyz, quat, xyz - eef]."""
        o = self.obs
        parts = [
            o["robot0_joint_pos_sin"],
            o["robot0_joint_pos_cos"],
            o["robot0_joint_vel"],
            o["robot0_eef_pos"],
            o["robot0_eef_quat_site"],
            o["robot0_gripper_qpos"],
        ]
        for name in self.task.objects:
            parts += [o[f"{name}_pos"], o[f"{name}_quat"], o[f"{name}_pos"] - o["robot0_eef_pos"]]
        return np.concatenate(parts).astype(np.float32)

    def _reseed(self, rng: np.random.Generator) -> None:
        # robosuite hands its generator to the placement samplers when the model is built; a soft reset
        # keeps those references, so each sampler gets the episode's generator as well.
        self.env.rng = rng
        samplers = [self.env.placement_initializer]
        while samplers:
            sampler = samplers.pop()
            sampler.rng = rng
            samplers.extend(getattr(sampler, "samplers", {}).values())
