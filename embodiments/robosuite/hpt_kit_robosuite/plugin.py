"""The robosuite embodiments, registered with hpt-kit through the ``hpt_kit`` entry point.

One embodiment per arm in Lift: ``robosuite-panda``, ``robosuite-sawyer``, ``robosuite-iiwa``,
``robosuite-jaco``, ``robosuite-kinova3`` and ``robosuite-ur5e``. Their joint and gripper counts
differ, so their state vectors differ in size and layout; the action is the same 7-d operational-space
command for all of them. Registration reads the tables in :mod:`hpt_kit_robosuite.robots` only; no
robosuite environment is built until a dataset is converted or a rollout runs.
"""

from __future__ import annotations

from functools import partial

import hpt_kit
from hpt_kit import ActionSpec, Embodiment, HeadSpec, ObservationSpec, StemSpec

from hpt_kit_robosuite import runner
from hpt_kit_robosuite.robots import CONTROL_HZ, ROBOTS, TASKS, Robot, Task, embodiment_name, state_dim

ACTION_DIM = 7  # [dx, dy, dz, dax, day, daz, gripper], each in [-1, 1]


def make_embodiment(robot: Robot, task: Task) -> Embodiment:
    return Embodiment(
        name=embodiment_name(robot, task),
        observation=ObservationSpec(state_dim=state_dim(robot, task)),
        action=ActionSpec(
            dim=ACTION_DIM, low=(-1.0,) * ACTION_DIM, high=(1.0,) * ACTION_DIM, control_hz=float(CONTROL_HZ)
        ),
        convert_dataset=partial(runner.convert_dataset, robot, task),
        rollout=partial(runner.rollout, robot, task),
        expert_rollout=partial(runner.expert_rollout, robot, task),
        rollout_envs=partial(runner.rollout_envs, robot, task),
        stems=(StemSpec("state"),),
        head=HeadSpec(action_horizon=4),
        observation_horizon=1,
        max_episode_steps=task.max_steps,
        description=(
            f"robosuite {robot.robosuite_name} ({robot.joints} joints, {robot.gripper}) in "
            f"{task.robosuite_name}: {task.description}; OSC_POSE deltas + gripper at 20 Hz."
        ),
    )


def embodiments() -> list[Embodiment]:
    return [make_embodiment(robot, task) for task in TASKS for robot in ROBOTS]


@hpt_kit.hookimpl
def hpt_register_embodiments(registry) -> None:
    for embodiment in embodiments():
        registry.add(embodiment)
