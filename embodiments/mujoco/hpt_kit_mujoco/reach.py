"""A MuJoCo arm reaching a target: the one environment behind every embodiment in this package.

Actions are per-joint position deltas in [-1, 1]. The environment scales them by ``max_delta`` and sets
each joint servo's setpoint to the *measured* joint angle plus that delta, rather than accumulating
setpoints, so the next step depends only on what the state vector shows (the task stays Markov).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import mujoco
import numpy as np

RENDER_HINT = (
    "rendering needs a headless OpenGL backend: set MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa "
    "(CPU, needs libosmesa6) in the environment before Python starts"
)


@dataclass(frozen=True)
class ArmTask:
    """Everything that distinguishes one reaching embodiment from another."""

    name: str  # the embodiment name
    xml: str  # MJCF file under hpt_kit_mujoco/assets
    home: tuple[float, ...]  # joint angles an episode starts around
    target_low: tuple[float, ...]  # targets are end-effector positions of joint configurations
    target_high: tuple[float, ...]  # drawn uniformly from [target_low, target_high], so always reachable
    description: str = ""
    home_noise: float = 0.1  # uniform noise (rad) added to every home angle
    min_target_height: float = 0.0  # reject targets below this z (m), e.g. inside the floor
    min_target_radius: float = 0.0  # reject targets this close (m) to the base's vertical axis
    max_target_azimuth: float = math.pi  # reject targets further round (rad) from the +x axis
    min_start_distance: float = 0.1  # reject targets this close (m) to the start: no trivial episodes
    max_delta: float = 0.2  # rad per control step when |action| = 1
    substeps: int = 10  # physics steps per control step: 10 x 5 ms = 20 Hz control
    max_steps: int = 50
    success_threshold: float = 0.03  # m between end effector and target
    views: tuple[str, ...] = ()  # cameras rendered into the observation; empty for state-only variants
    image_size: int = 64
    image_variant: str = ""  # the embodiment that adds camera images to this one, if any


class ReachEnv:
    """One arm, one target. ``reset`` draws both from the given generator; ``step`` applies one action."""

    def __init__(self, task: ArmTask):
        self.task = task
        xml = resources.files("hpt_kit_mujoco").joinpath("assets", task.xml)
        with resources.as_file(xml) as path:
            self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        self.n = self.model.nu
        assert self.model.nq == self.n == len(task.home), f"{task.xml}: one actuated hinge per joint expected"
        self._ee = self.model.site("ee").id
        self._target = self.model.body("target").mocapid[0]
        self._jacp = np.zeros((3, self.model.nv))
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

    @property
    def control_hz(self) -> float:
        return 1.0 / (self.model.opt.timestep * self.task.substeps)

    @property
    def state_dim(self) -> int:
        return 3 * self.n + 9

    @property
    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._ee].copy()

    @property
    def target_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self._target].copy()

    def distance(self) -> float:
        return float(np.linalg.norm(self.target_pos - self.ee_pos))

    def jacobian(self) -> np.ndarray:
        """Positional Jacobian of the end effector, (3, joints)."""
        mujoco.mj_jacSite(self.model, self.data, self._jacp, None, self._ee)
        return self._jacp.copy()

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        task = self.task
        start = np.asarray(task.home) + rng.uniform(-task.home_noise, task.home_noise, self.n)
        start_ee = self._forward(start)
        for _ in range(1000):
            target = self._forward(rng.uniform(task.target_low, task.target_high))
            if self._valid_target(target, start_ee):
                break
        else:
            raise RuntimeError(f"{task.name}: no valid target found; check target_low/high")
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = start
        self.data.ctrl[:] = start
        self.data.mocap_pos[self._target] = target
        mujoco.mj_forward(self.model, self.data)
        return self.state()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Apply an action in [-1, 1]^n; return (state, reward = -distance, success)."""
        self.data.ctrl[:] = self.data.qpos + self.task.max_delta * np.clip(action, -1.0, 1.0)
        mujoco.mj_step(self.model, self.data, nstep=self.task.substeps)
        distance = self.distance()
        return self.state(), -distance, distance < self.task.success_threshold

    def state(self) -> np.ndarray:
        """[sin q (n), cos q (n), qdot (n), ee xyz (3), target xyz (3), target - ee (3)] as float32."""
        q = self.data.qpos
        ee, target = self.ee_pos, self.target_pos
        parts = (np.sin(q), np.cos(q), self.data.qvel, ee, target, target - ee)
        return np.concatenate(parts).astype(np.float32)

    def render(self, camera: str, size: int) -> np.ndarray:
        """One (size, size, 3) uint8 frame from a named camera."""
        renderer = self._renderers.get((size, size))
        if renderer is None:
            try:
                renderer = mujoco.Renderer(self.model, size, size)
            except Exception as exc:  # noqa: BLE001 - backend failures have many exception types
                raise RuntimeError(f"{self.task.name}: {RENDER_HINT} ({type(exc).__name__}: {exc})") from exc
            self._renderers[(size, size)] = renderer
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def images(self) -> np.ndarray:
        """The observation image: (views, size, size, 3) uint8."""
        return np.stack([self.render(view, self.task.image_size) for view in self.task.views])

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def _valid_target(self, target: np.ndarray, start_ee: np.ndarray) -> bool:
        task = self.task
        return (
            target[2] >= task.min_target_height
            and math.hypot(target[0], target[1]) >= task.min_target_radius
            and abs(math.atan2(target[1], target[0])) <= task.max_target_azimuth
            and float(np.linalg.norm(target - start_ee)) >= task.min_start_distance
        )

    def _forward(self, qpos: np.ndarray) -> np.ndarray:
        """End-effector position at joint angles ``qpos`` (kinematics only; leaves the arm there)."""
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self._ee].copy()
