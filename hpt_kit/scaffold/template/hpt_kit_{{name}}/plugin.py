"""The {{embodiment}} embodiment: a 2-joint planar MuJoCo arm reaching a random target.

hpt-kit finds this module through the ``hpt_kit`` entry point in pyproject.toml and calls
``hpt_register_embodiments``. README.md says which parts to replace for a real robot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib import resources

import hpt_kit
import mujoco
import numpy as np
from hpt_kit import (
    ActionSpec,
    Controller,
    ConvertRequest,
    Embodiment,
    HeadSpec,
    ObservationSpec,
    RolloutRequest,
    RolloutResult,
    SpecError,
    StemSpec,
)
from hpt_kit.rollout import EpisodeSource, collect_episodes, evaluate

NAME = "{{embodiment}}"
JOINTS = 2
STATE_DIM = 3 * JOINTS + 6  # sin q, cos q, joint velocities, fingertip xyz, target - fingertip xyz
SUBSTEPS = 10  # physics steps of 5 ms per control step
CONTROL_HZ = 20.0  # 1 / (SUBSTEPS x 5 ms): actions, and video frames, per second
MAX_DELTA = 0.2  # joint position change (rad) commanded by an action of 1
MAX_STEPS = 50  # control steps per episode
SUCCESS_DISTANCE = 0.03  # m between fingertip and target
VIDEO_SIZE = 128  # pixels; videos need an OpenGL backend: MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa (CPU)


class ReachEnv:
    """The simulated robot and its task, in the form hpt-kit's episode loops drive (``EpisodeEnv``):
    ``reset`` draws a start pose and a target from ``rng``; ``reset`` and ``step`` return what the
    controller observes; ``frame`` is one video frame."""

    action_dim = JOINTS
    max_steps = MAX_STEPS

    def __init__(self) -> None:
        with resources.as_file(resources.files(__package__) / "robot.xml") as path:
            self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        self.ee = self.model.site("ee").id
        self.renderer: mujoco.Renderer | None = None  # built by the first video frame

    def reset(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        mujoco.mj_resetData(self.model, self.data)
        start = np.array([0.0, 0.8]) + rng.uniform(-0.1, 0.1, JOINTS)
        start_ee = self.fingertip_at(start)
        # A target is where the fingertip is in a random pose, so it is always reachable; keeping the
        # elbow bent the same way as at the start means the expert never has to flip it.
        for _ in range(1000):
            target = self.fingertip_at(rng.uniform([-1.5, 0.3], [1.5, 2.4]))
            if np.linalg.norm(target - start_ee) > 0.1:
                break
        self.data.qpos[:] = start
        self.data.ctrl[:] = start
        self.data.mocap_pos[0] = target
        mujoco.mj_forward(self.model, self.data)
        return {"state": self.state()}

    def fingertip_at(self, qpos: np.ndarray) -> np.ndarray:
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.ee].copy()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
        """Set each joint's servo to its measured angle plus the delta; (observation, reward, success)."""
        self.data.ctrl[:] = self.data.qpos + MAX_DELTA * np.clip(action, -1.0, 1.0)
        mujoco.mj_step(self.model, self.data, nstep=SUBSTEPS)
        distance = float(np.linalg.norm(self.error()))
        return {"state": self.state()}, -distance, distance < SUCCESS_DISTANCE

    def error(self) -> np.ndarray:
        return self.data.mocap_pos[0] - self.data.site_xpos[self.ee]

    def state(self) -> np.ndarray:
        q = self.data.qpos
        parts = (np.sin(q), np.cos(q), self.data.qvel, self.data.site_xpos[self.ee], self.error())
        return np.concatenate(parts).astype(np.float32)

    def frame(self) -> np.ndarray:
        if self.renderer is None:
            self.renderer = mujoco.Renderer(self.model, VIDEO_SIZE, VIDEO_SIZE)
        self.renderer.update_scene(self.data, camera="top")
        return self.renderer.render()

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


class Expert:
    """Scripted demonstrator: damped least-squares inverse kinematics on the fingertip Jacobian. It reads
    the simulator rather than the observation, which is fine for making data but not for a policy."""

    def __init__(self, env: ReachEnv, gain: float = 0.8, damping: float = 0.05):
        self.env, self.gain, self.damping = env, gain, damping

    def reset(self) -> None:
        pass

    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        jac = np.zeros((3, self.env.model.nv))
        mujoco.mj_jacSite(self.env.model, self.env.data, jac, None, self.env.ee)
        dq = jac.T @ np.linalg.solve(jac @ jac.T + self.damping**2 * np.eye(3), self.gain * self.env.error())
        action = dq / MAX_DELTA
        return (action / max(1.0, np.abs(action).max())).astype(np.float32)


def convert_dataset(request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    """Expert demonstrations; failed ones are dropped and redrawn, and counted in ``request.notes``."""
    if request.render:
        raise SpecError(f"{NAME} observes state only; it has no camera to render")
    return _demonstrations(request)


def _demonstrations(request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    env = ReachEnv()
    request.notes.update(mujoco_version=mujoco.__version__)
    try:
        yield from collect_episodes(NAME, request, [EpisodeSource(env, Expert(env))])
    finally:
        env.close()


def _evaluate(make_controller: Callable[[ReachEnv], Controller], request: RolloutRequest) -> RolloutResult:
    """Run ``request.episodes`` episodes with the controller ``make_controller(env)`` returns."""
    if request.render:
        raise SpecError(f"{NAME} observes state only; it has no camera to render")
    env = ReachEnv()
    try:
        return evaluate(NAME, request, [EpisodeSource(env, make_controller(env))], video_fps=CONTROL_HZ)
    finally:
        env.close()


def rollout(controller: Controller, request: RolloutRequest) -> RolloutResult:
    return _evaluate(lambda env: controller, request)


def expert_rollout(request: RolloutRequest) -> RolloutResult:
    return _evaluate(Expert, request)


EMBODIMENT = Embodiment(
    name=NAME,
    observation=ObservationSpec(state_dim=STATE_DIM),
    action=ActionSpec(dim=JOINTS, low=(-1.0,) * JOINTS, high=(1.0,) * JOINTS, control_hz=CONTROL_HZ),
    convert_dataset=convert_dataset,
    rollout=rollout,
    expert_rollout=expert_rollout,
    stems=(StemSpec("state"),),
    head=HeadSpec(action_horizon=4),
    max_episode_steps=MAX_STEPS,
    description="2-joint planar MuJoCo arm reaching a random target (scaffolded; replace with your robot).",
)


@hpt_kit.hookimpl
def hpt_register_embodiments(registry) -> None:
    registry.add(EMBODIMENT)
