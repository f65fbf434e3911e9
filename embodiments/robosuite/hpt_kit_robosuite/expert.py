"""The scripted expert: hover above the object, descend, close the gripper, lift, and for a task with
a ``place_on`` object, carry it over that object, lower it and let go.

It is a :class:`hpt_kit.Controller` that reads robosuite's own observation dictionary and contact
test from the environment (privileged, like any scripted expert), so conversion and
``expert_rollout`` drive it through the same loop as a learned policy. Its phase is the only state
it keeps between steps.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hpt_kit_robosuite.env import SuiteEnv

POS_SCALE = 0.05  # metres per unit of the position action (the controller's output_max)
ORI_SCALE = 0.5  # radians per unit of the rotation action
OPEN, CLOSE = -1.0, 1.0

APPROACH, DESCEND, GRASP, LIFT, CARRY, LOWER, RELEASE = range(7)
HOLDING = (LIFT, CARRY, LOWER)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion in robosuite's (x, y, z, w) order."""
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def yaw_rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def square_yaw_offset(cube: np.ndarray, gripper: np.ndarray, keep_clear: np.ndarray | None = None) -> float:
    """Turn about the vertical that lines the gripper's x axis (along which every robosuite gripper
    here closes) up with a face of the cube; a cube looks the same every quarter turn.

    The smallest such turn (within +-45 degrees), unless ``keep_clear`` gives a horizontal direction
    the open fingers must not reach along (towards a neighbouring object): then the one of the two
    nearest turns that closes the fingers across that direction.
    """
    cube_yaw = np.arctan2(cube[1, 0], cube[0, 0])
    gripper_yaw = np.arctan2(gripper[1, 0], gripper[0, 0])
    quarter = np.pi / 2
    turn = float((cube_yaw - gripper_yaw + quarter / 2) % quarter - quarter / 2)
    if keep_clear is None:
        return turn
    other = turn - quarter if turn > 0 else turn + quarter

    def reach(t: float) -> float:
        return abs(np.cos(gripper_yaw + t) * keep_clear[0] + np.sin(gripper_yaw + t) * keep_clear[1])

    return turn if reach(turn) <= reach(other) else other


def rotation_vector(r: np.ndarray) -> np.ndarray:
    """Axis times angle of a rotation matrix (angle in [0, pi))."""
    angle = np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


class PickExpert:
    """Phase machine over the end-effector site and the objects, with proportional Cartesian control.

    The gripper keeps the tilt it starts the episode with and turns about the vertical to square up
    with the object before grasping. An object that slips out while held sends the expert back to the
    approach.
    """

    def __init__(
        self,
        env: SuiteEnv,
        gain: float = 1.0,  # fraction of the position error commanded per step
        hover: float = 0.06,  # m above the grasp point before descending
        close_steps: int = 4,  # fewest steps to hold still while the fingers close
        settle_steps: int = 2,  # steps both fingers must touch the object before lifting
        lift_height: float = 0.12,  # m the gripper rises above where it grasped (no place_on)
        carry_clearance: float = 0.05,  # m between the held object and the one below while carrying
        place_clearance: float = 0.005,  # m above the lower object where the held one is let go
        drop_distance: float = 0.03,  # m between gripper and grasp point that counts as a dropped object
        recenter_distance: float = 0.015,  # m off centre, in the plane, that aborts a descent
        square_tolerance: float = 0.1,  # rad of orientation error left when the descent may start
        crowded_distance: float = 0.095,  # m to the place_on object below which the fingers avoid it
    ):
        self.env = env
        self.gain = gain
        self.hover = hover
        self.close_steps = close_steps
        self.settle_steps = settle_steps
        self.lift_height = lift_height
        self.carry_clearance = carry_clearance
        self.place_clearance = place_clearance
        self.drop_distance = drop_distance
        self.recenter_distance = recenter_distance
        self.square_tolerance = square_tolerance
        self.crowded_distance = crowded_distance
        self.reset()

    def reset(self) -> None:
        self.home_ori: np.ndarray | None = None
        self.target_ori: np.ndarray | None = None
        self._restart()

    def _restart(self) -> None:
        self.phase = APPROACH
        self.closed_for = self.held_for = 0
        self.lift_from: np.ndarray | None = None

    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        obs, robot, task = self.env.obs, self.env.robot, self.env.task
        eef, obj = obs["robot0_eef_pos"], obs[f"{task.pick}_pos"]
        ori = quat_to_matrix(obs["robot0_eef_quat_site"])
        if self.home_ori is None:
            self.home_ori = ori
        if self.phase in (APPROACH, DESCEND):
            keep_clear = None
            if task.place_on is not None:
                away = (obs[f"{task.place_on}_pos"] - obj)[:2]
                if np.linalg.norm(away) < self.crowded_distance:
                    keep_clear = away / np.linalg.norm(away)
            turn = square_yaw_offset(quat_to_matrix(obs[f"{task.pick}_quat"]), self.home_ori, keep_clear)
            self.target_ori = yaw_rotation(turn) @ self.home_ori
        grasp = obj  # every gripper's end-effector site lies between its fingertips
        if self.phase in HOLDING and np.linalg.norm(grasp - eef) > self.drop_distance:
            self._restart()  # the object slipped out
        target, gripper = eef, OPEN
        if robot.open_until is not None and obs["robot0_gripper_qpos"][0] >= robot.open_until:
            gripper = 0.0  # a rate-commanded gripper holds its opening at 0
        turn_left = rotation_vector(self.target_ori @ ori.T)  # axis * angle still to rotate
        if self.phase == APPROACH:
            target = grasp + np.array([0.0, 0.0, self.hover])
            centred = np.linalg.norm((target - eef)[:2]) < 0.01 and abs(target[2] - eef[2]) < 0.02
            if centred and np.linalg.norm(turn_left) < self.square_tolerance:
                self.phase = DESCEND
        if self.phase == DESCEND:
            target = grasp
            if np.linalg.norm((target - eef)[:2]) > self.recenter_distance:
                self.phase = APPROACH  # drifted off centre: back up rather than land a finger on top
                target = grasp + np.array([0.0, 0.0, self.hover])
            elif np.linalg.norm(target - eef) < 0.01:
                self.phase = GRASP
        if self.phase == GRASP:
            target, gripper = grasp, CLOSE
            self.closed_for += 1
            self.held_for = self.held_for + 1 if self.env.grasping(task.pick) else 0
            if self.closed_for >= self.close_steps and self.held_for >= self.settle_steps:
                self.phase, self.lift_from = LIFT, eef.copy()
        if task.place_on is None:
            if self.phase == LIFT:
                target, gripper = self.lift_from + np.array([0.0, 0.0, self.lift_height]), CLOSE
        else:
            target, gripper = self._place(eef, obj, target, gripper)
        position = np.clip(self.gain * (target - eef) / POS_SCALE, -1.0, 1.0)
        rotation = np.clip(turn_left / ORI_SCALE, -1.0, 1.0)
        return np.concatenate([position, rotation, [gripper]]).astype(np.float32)

    def _place(self, eef: np.ndarray, obj: np.ndarray, target: np.ndarray, gripper: float):
        """Targets for the phases after the grasp when the object goes onto another one."""
        task, env = self.env.task, self.env
        base = env.obs[f"{task.place_on}_pos"]
        # Where the held object's centre rests on top of the lower one, and the gripper's offset to it.
        rest_z = base[2] + env.half_height(task.place_on) + env.half_height(task.pick)
        hand = eef - obj
        above = np.array([base[0], base[1], rest_z + self.carry_clearance]) + hand
        if self.phase == LIFT:
            target, gripper = np.array([eef[0], eef[1], above[2]]), CLOSE
            if eef[2] > above[2] - 0.02:
                self.phase = CARRY
        if self.phase == CARRY:
            target, gripper = above, CLOSE
            if np.linalg.norm((target - eef)[:2]) < 0.01 and abs(target[2] - eef[2]) < 0.02:
                self.phase = LOWER
        if self.phase == LOWER:
            target = np.array([base[0], base[1], rest_z + self.place_clearance]) + hand
            gripper = CLOSE
            if abs(target[2] - eef[2]) < 0.01:
                self.phase = RELEASE
        if self.phase == RELEASE:
            target, gripper = eef, OPEN
        return target, gripper
