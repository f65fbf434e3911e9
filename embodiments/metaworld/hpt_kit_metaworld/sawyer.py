"""One Meta-World v3 task on the Sawyer arm, reset from a generator the caller owns.

Meta-World's benchmarks draw each task's object and goal positions from global NumPy state, or
replay 50 goals fixed per benchmark. Here every reset draws them afresh from the generator passed
in, through the environment's own sampler (``seeded_rand_vec``), so each episode is reproducible on
its own. The goal is observed, as in the MT benchmarks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RENDER_HINT = (
    "rendering needs a headless OpenGL backend: set MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa "
    "(CPU, needs libosmesa6) in the environment before Python starts"
)


class SawyerTask:
    """A thin wrapper: ``reset(rng)``, ``step(action)`` and ``render(camera, size)``."""

    def __init__(self, task: str):
        # Meta-World (with gymnasium and scipy) takes about a second to import; only pay it when
        # an environment is actually built, never at registration.
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.task = task
        env = ALL_V3_ENVIRONMENTS[task]()
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)  # cached with the goal hidden; recompute
        env._set_task_called = True
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        self.env = env
        self._renderers: dict[int, Any] = {}  # mujoco.Renderer by frame size

    @property
    def control_hz(self) -> float:
        return 1.0 / self.env.dt

    @property
    def max_path_length(self) -> int:
        return self.env.max_path_length

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """Start an episode with object and goal positions drawn from ``rng``; the 39-d observation."""
        self.env.np_random = rng
        obs, _ = self.env.reset()
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """(observation, reward, success) after one action in [-1, 1]^4."""
        obs, reward, _, _, info = self.env.step(action)
        return obs, float(reward), bool(info["success"])

    def render(self, camera: str, size: int) -> np.ndarray:
        """One (size, size, 3) uint8 frame, upright."""
        import mujoco

        renderer = self._renderers.get(size)
        if renderer is None:
            # Multisampling, shadows and reflections make a software-rendered frame ~25x slower
            # (about 300 ms instead of 12 ms at 64x64 with OSMesa) for little at this size.
            self.env.model.vis.quality.offsamples = 0
            try:
                renderer = mujoco.Renderer(self.env.model, size, size)
            except Exception as exc:  # noqa: BLE001 - backend failures have many exception types
                raise RuntimeError(f"{self.task}: {RENDER_HINT} ({type(exc).__name__}: {exc})") from exc
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
                renderer.scene.flags[flag] = False
            self._renderers[size] = renderer
        renderer.update_scene(self.env.data, camera=camera)
        # Meta-World's cameras are rolled half a turn (their image y axis points down the world);
        # turning the frame half a turn back gives the upright, unmirrored view.
        return np.rot90(renderer.render(), 2).copy()

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self.env.close()
