"""The robots and tasks this package turns into embodiments, as plain data.

Nothing here imports robosuite: the plugin registers its embodiments from these tables alone, so
``hpt-kit list`` stays fast. The sizes are what robosuite 1.5 builds for each robot with its default
gripper; the tests build every environment and check them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Robot:
    """One robosuite arm with its default gripper."""

    key: str  # lowercase, used in embodiment names
    robosuite_name: str  # the name robosuite.make takes
    joints: int  # arm joints (the gripper's are counted in gripper_qpos)
    gripper: str  # robosuite's default gripper for this arm, for documentation
    gripper_qpos: int  # entries of the gripper's joint-position observation
    # Grippers whose command is a closing *rate* (Jaco's fingers move 0.01 of their range per step)
    # open only until their first joint reaches this position, so that closing again stays short.
    open_until: float | None = None
    # Collision geoms switched off after the model is built. Sawyer's first link rests on the collision
    # cylinder of its base, which MuJoCo's parent-child filter does not cover (the base is welded to the
    # world), and the friction at that contact locks joint 0.
    disabled_collisions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """One robosuite manipulation environment: what the expert picks up, where it puts it, how long
    an episode may last."""

    key: str  # "" for the default task, else a suffix of the embodiment name
    robosuite_name: str
    pick: str  # the object the expert grasps (robosuite's attribute and observation name)
    max_steps: int  # control steps before an episode is cut off
    description: str
    place_on: str | None = None  # the object to set it down on; None: lift it and hold

    @property
    def objects(self) -> tuple[str, ...]:
        """Objects whose state enters the observation, each as pos (3) + quat (4) + offset (3)."""
        return (self.pick,) if self.place_on is None else (self.pick, self.place_on)


ROBOTS = (
    Robot("panda", "Panda", joints=7, gripper="PandaGripper", gripper_qpos=2),
    Robot(
        "sawyer",
        "Sawyer",
        joints=7,
        gripper="RethinkGripper",
        gripper_qpos=2,
        disabled_collisions=("robot0_base_col",),
    ),
    Robot("iiwa", "IIWA", joints=7, gripper="Robotiq140Gripper", gripper_qpos=6),
    Robot("jaco", "Jaco", joints=7, gripper="JacoThreeFingerGripper", gripper_qpos=6, open_until=0.8),
    Robot("kinova3", "Kinova3", joints=7, gripper="Robotiq85Gripper", gripper_qpos=6),
    Robot("ur5e", "UR5e", joints=6, gripper="Robotiq85Gripper", gripper_qpos=6),
)

LIFT = Task(
    key="",
    robosuite_name="Lift",
    pick="cube",
    max_steps=150,
    description="lift the red cube more than 4 cm above the table",
)

STACK = Task(
    key="stack",
    robosuite_name="Stack",
    pick="cubeA",
    place_on="cubeB",
    max_steps=200,
    description="stack the red cube on the green one and let go",
)

TASKS = (LIFT, STACK)

CONTROL_HZ = 20  # robosuite's default control frequency; every environment is built with it
ROBOT_STATE = 3  # end-effector position
ROBOT_QUAT = 4  # end-effector orientation (xyzw)
OBJECT_STATE = 10  # object position (3), quaternion (4), object minus end effector (3)


def state_dim(robot: Robot, task: Task) -> int:
    """[sin q, cos q, qdot] per joint, end-effector pose, gripper qpos, then each object's state."""
    return 3 * robot.joints + ROBOT_STATE + ROBOT_QUAT + robot.gripper_qpos + OBJECT_STATE * len(task.objects)


def embodiment_name(robot: Robot, task: Task) -> str:
    return f"robosuite-{robot.key}" + (f"-{task.key}" if task.key else "")
