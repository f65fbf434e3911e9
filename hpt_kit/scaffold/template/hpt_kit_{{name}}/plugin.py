"""The {{embodiment}} embodiment: a 2-joint planar MuJoCo arm reaching a random target.

hpt-kit finds this module through the ``hpt_kit`` entry point in pyproject.toml and calls
``hpt_register_embodiments``. README.md says which parts to replace for a real robot.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path

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

NAME = "{{embodiment}}"
JOINTS = 2
STATE_DIM = 3 * JOINTS + 6  # sin q, cos q, joint velocities, fingertip xyz, target - fingertip xyz
SUBSTEPS = 10  # physics steps of 5 ms per control step: 20 Hz control
MAX_DELTA = 0.2  # joint position change (rad) commanded by an action of 1
MAX_STEPS = 50  # control steps per episode
SUCCESS_DISTANCE = 0.03  # m between fingertip and target
CONVERT_STREAM, ROLLOUT_STREAM = 0, 1  # seed streams: evaluation never replays training episodes


class ReachEnv:
    """The simulated robot and its task. ``reset`` draws a start pose and a target from ``rng``."""

    def __init__(self) -> None:
        with resources.as_file(resources.files(__package__) / "robot.xml") as path:
            self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        self.ee = self.model.site("ee").id

    def reset(self, rng: np.random.Generator) -> np.ndarray:
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
        return self.state()

    def fingertip_at(self, qpos: np.ndarray) -> np.ndarray:
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.ee].copy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Set each joint's servo to its measured angle plus the delta; return (state, reward, success)."""
        self.data.ctrl[:] = self.data.qpos + MAX_DELTA * np.clip(action, -1.0, 1.0)
        mujoco.mj_step(self.model, self.data, nstep=SUBSTEPS)
        distance = float(np.linalg.norm(self.error()))
        return self.state(), -distance, distance < SUCCESS_DISTANCE

    def error(self) -> np.ndarray:
        return self.data.mocap_pos[0] - self.data.site_xpos[self.ee]

    def state(self) -> np.ndarray:
        q = self.data.qpos
        parts = (np.sin(q), np.cos(q), self.data.qvel, self.data.site_xpos[self.ee], self.error())
        return np.concatenate(parts).astype(np.float32)


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


def run_episode(env: ReachEnv, controller: Controller, rng: np.random.Generator, renderer=None) -> dict:
    """One closed-loop episode, ended by success or after MAX_STEPS; ``renderer`` records frames."""
    state = env.reset(rng)
    controller.reset()
    log = {"state": [], "action": [], "frames": [], "return": 0.0, "success": False}
    for _ in range(MAX_STEPS):
        if renderer is not None:
            renderer.update_scene(env.data, camera="top")
            log["frames"].append(renderer.render())
        action = np.asarray(controller.act({"state": state}), np.float32).reshape(JOINTS).clip(-1, 1)
        log["state"].append(state)
        log["action"].append(action)
        state, reward, log["success"] = env.step(action)
        log["return"] += reward
        if log["success"]:
            break
    return log


def episode_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, index)))


def convert_dataset(request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    """Expert demonstrations; failed ones are dropped and redrawn, and counted in ``request.notes``."""
    if request.render:
        raise SpecError(f"{NAME} observes state only; it has no camera to render")
    return _demonstrations(request)


def _demonstrations(request: ConvertRequest) -> Iterator[dict[str, np.ndarray]]:
    env = ReachEnv()
    expert = Expert(env)
    kept = attempts = 0
    while kept < request.episodes:
        if attempts >= 2 * request.episodes + 20:
            raise RuntimeError(f"{NAME}: the expert failed {attempts - kept} of {attempts} episodes")
        log = run_episode(env, expert, episode_rng(request.seed, CONVERT_STREAM, attempts))
        attempts += 1
        kept += log["success"]
        request.notes.update(
            mujoco_version=mujoco.__version__,
            episodes_dropped=attempts - kept,
            expert_success_rate=kept / attempts,
        )
        if log["success"]:
            yield {"state": np.stack(log["state"]), "action": np.stack(log["action"])}


def evaluate(make_controller, request: RolloutRequest) -> RolloutResult:
    """Run ``request.episodes`` episodes with the controller ``make_controller(env)`` returns."""
    if request.render:
        raise SpecError(f"{NAME} observes state only; it has no camera to render")
    env = ReachEnv()
    controller = make_controller(env)
    # Videos need an OpenGL backend: MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa (CPU).
    renderer = mujoco.Renderer(env.model, 128, 128) if request.video_dir else None
    successes, returns, lengths, videos = [], [], [], []
    for i in range(request.episodes):
        log = run_episode(env, controller, episode_rng(request.seed, ROLLOUT_STREAM, i), renderer)
        successes.append(log["success"])
        returns.append(log["return"])
        lengths.append(len(log["action"]))
        if renderer is not None:
            path = Path(request.video_dir) / f"{NAME}-episode{i:03d}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, frames=np.stack(log["frames"]))
            videos.append(str(path))
    if renderer is not None:
        renderer.close()
    return RolloutResult.from_episodes(successes, returns, lengths, videos)


def rollout(controller: Controller, request: RolloutRequest) -> RolloutResult:
    return evaluate(lambda env: controller, request)


def expert_rollout(request: RolloutRequest) -> RolloutResult:
    return evaluate(Expert, request)


EMBODIMENT = Embodiment(
    name=NAME,
    observation=ObservationSpec(state_dim=STATE_DIM),
    action=ActionSpec(dim=JOINTS, low=(-1.0,) * JOINTS, high=(1.0,) * JOINTS, control_hz=20.0),
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
