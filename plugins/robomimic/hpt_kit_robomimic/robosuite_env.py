"""Rolling a policy trained on an imported robomimic dataset out in the robosuite environment that the
file's ``env_args`` name.

Everything comes from what the import recorded (``notes.import``): ``extra.env_args`` (environment,
robots, controller, cameras and their size), the state keys in the order they were concatenated,
the views and the stored frame size. Observations are made the way robomimic's own robosuite wrapper
makes them when it writes or evaluates a dataset: ``object`` is robosuite's ``object-state``, the
other keys are robosuite's observables of that name (switched on where robosuite leaves them off,
e.g. ``robot0_joint_pos``), ``states`` is the flattened MuJoCo state, and a view ``<camera>_image``
is robosuite's frame turned over (``[::-1]``: whatever robosuite's ``IMAGE_CONVENTION``, as robomimic
does, so upright under the default OpenGL one), then fitted to the stored size with the import's
``fit`` (:func:`hpt_kit.images.fit_frames`). Success is the environment's ``_check_success()``.

What cannot be matched raises :class:`NoEnvironment` with the reason (env_args missing or not
robosuite, an environment or robot this robosuite lacks, a controller it does not build, a camera
env_args did not render, an observation robosuite does not give, widths that differ from the
dataset's), and the kit evaluates offline instead. robosuite is imported only here, when asked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from hpt_kit import Controller, Embodiment, RolloutRequest, RolloutResult, SpecError
from hpt_kit.core.importer import NoEnvironment
from hpt_kit.core.spec import EmbodimentData
from hpt_kit.images import fit_frames
from hpt_kit.rollout import EnvFactory, EpisodeSource, RolloutEnvs, evaluate

from hpt_kit_robomimic import layout

HORIZON_FACTOR = 2  # episodes are cut at this many times the longest demonstration (files record no horizon)
MAKE_SEED = 0  # what robosuite draws once per environment (Lift's cube size), when env_kwargs give no seed
VIDEO_SIZE = 128
VIDEO_CAMERA = "frontview"
OBJECT_KEY, OBJECT_STATE = "object", "object-state"  # robomimic's name for robosuite's object observation
STATES_KEY = "states"
FIRST_COMPOSITE = (1, 5)  # robosuite versions from 1.5 build composite controllers ("body_parts")
ARMS = ("right",)  # the arm a single-arm robot's part controller drives, in robosuite 1.5's names
# Keyword arguments set as robomimic's wrapper sets them for evaluation; hard_reset off keeps the model
# loaded between episodes (a soft reset restores the state: same draws, milliseconds instead of a second).
EVALUATION_KWARGS = {"has_renderer": False, "ignore_done": True, "use_object_obs": True, "camera_depths": False, "hard_reset": False}

_ENVS: dict[Setup, Any] = {}


@dataclass(frozen=True)
class Setup:
    """What one rollout environment is built from: plain data, so a worker process builds its own."""

    name: str  # the imported embodiment
    env_name: str
    env_kwargs: str  # robosuite.make's keyword arguments as JSON (hashable, picklable)
    state_keys: tuple[str, ...]  # robomimic observation keys (or "states"), concatenated in this order
    cameras: tuple[str, ...]  # robosuite camera names, one view each, in the dataset's order
    height: int
    width: int
    fit: str
    state_dim: int
    action_dim: int
    max_steps: int
    control_hz: float
    adjusted: tuple[str, ...] = ()  # what was changed to build env_args here, in words


def environment(spec: EmbodimentData, note: Mapping[str, Any]) -> Embodiment:
    """The imported embodiment ``spec`` with a robosuite rollout, from its ``notes.import``; the
    environment is built here once (and kept for the rollouts), so anything that stops it is a
    :class:`NoEnvironment` now rather than an error in the first episode."""
    setup = plan(spec, note)
    build(setup)
    data = {f.name: getattr(spec, f.name) for f in dataclasses.fields(EmbodimentData)}
    robots = ", ".join(layout.robots({"env_kwargs": json.loads(setup.env_kwargs)})) or "its default robot"
    data["description"] = f"robosuite {setup.env_name} with {robots}, as the robomimic file's env_args name it"
    return Embodiment(
        **data,
        convert_dataset=partial(_no_conversion, spec.name),
        rollout=partial(rollout, setup),
        rollout_envs=partial(rollout_envs, setup),
    )


def plan(spec: EmbodimentData, note: Mapping[str, Any]) -> Setup:
    """Check what the import recorded against the installed robosuite, without building anything."""
    env = note.get("extra", {}).get("env_args") or {}
    if not env:
        raise NoEnvironment("the file records no env_args")
    if env.get("type") != layout.ROBOSUITE_ENV_TYPE or not env.get("env_name"):
        raise NoEnvironment(
            f"env_args name no robosuite environment (type {env.get('type')!r}, robosuite's is {layout.ROBOSUITE_ENV_TYPE}; "
            f"env_name {env.get('env_name')!r})"
        )
    if spec.observation.language is not None:
        raise NoEnvironment("the dataset has instructions; robosuite rollouts give none")
    if note.get("action_key") != layout.ACTION:
        raise NoEnvironment(f"the actions were imported from {note.get('action_key')!r}, not robosuite's {layout.ACTION!r}")
    kwargs = dict(env.get("env_kwargs") or {})
    state_keys = tuple(_observation_key(k) for k in note.get("state_keys", ()))
    cameras = tuple(_camera(k, kwargs) for k in note.get("views", ()))
    robosuite = _import_robosuite()
    version = robosuite.__version__
    if env["env_name"] not in robosuite.ALL_ENVIRONMENTS:
        raise NoEnvironment(f"robosuite {version} has no environment {env['env_name']!r}")
    for robot in layout.robots(env):
        if robot not in robosuite.ALL_ROBOTS:
            raise NoEnvironment(f"robosuite {version} has no robot {robot!r}")
    adjusted = []
    if "controller_configs" in kwargs:
        kwargs["controller_configs"], how = _controller(kwargs["controller_configs"], layout.robots(env), version)
        adjusted += [how] if how else []
    kwargs.update(EVALUATION_KWARGS, has_offscreen_renderer=bool(cameras), use_camera_obs=bool(cameras))
    kwargs.setdefault("seed", MAKE_SEED)
    frames = note.get("frames", {})
    return Setup(
        name=spec.name,
        env_name=env["env_name"],
        env_kwargs=json.dumps(kwargs, sort_keys=True),
        state_keys=state_keys,
        cameras=cameras,
        height=int(frames.get("height", 0)),
        width=int(frames.get("width", 0)),
        fit=str(frames.get("fit", "pad")),
        state_dim=spec.observation.state_dim,
        action_dim=spec.action.dim,
        max_steps=HORIZON_FACTOR * max(spec.max_episode_steps, 1),
        control_hz=float(kwargs.get("control_freq") or 20),
        adjusted=tuple(adjusted),
    )


def _observation_key(key: str) -> str:
    """The robosuite observation behind an imported state key: ``obs/<key>`` or the MuJoCo ``states``."""
    if key == STATES_KEY:
        return key
    prefix = f"{layout.OBS}/"
    if not key.startswith(prefix):
        raise NoEnvironment(f"state key {key!r} is not an observation robosuite gives")
    return key[len(prefix) :]


def _camera(key: str, kwargs: Mapping[str, Any]) -> str:
    """The robosuite camera behind a view ``obs/<camera>_image``, which env_args must have rendered."""
    short = key.rsplit("/", 1)[-1]
    if not short.endswith(layout.IMAGE_SUFFIX):
        raise NoEnvironment(f"view {key!r} is not a robosuite camera image (<camera>_image)")
    camera = short[: -len(layout.IMAGE_SUFFIX)]
    names = kwargs.get("camera_names") or []
    names = [names] if isinstance(names, str) else list(names)
    if camera not in names:
        raise NoEnvironment(f"camera {camera!r} (view {key}) is not among env_args camera_names {names}")
    return camera


def _controller(config: Any, robots: list[str], version: str) -> tuple[Any, str]:
    """The controller config as the installed robosuite builds it, and what was changed, in words.

    robosuite 1.5 replaced 1.4's part controller configs (``{"type": "OSC_POSE", ...}``) with
    composite ones (``{"type": "BASIC", "body_parts": {"right": {...}}}``); a 1.4 config is converted
    by robosuite's own ``refactor_composite_controller_config`` (as its demos do), the other way
    round there is no conversion."""
    installed = tuple(int(p) for p in version.split(".")[:2])
    configs = config if isinstance(config, list) else [config]
    composite = [isinstance(c, dict) and "body_parts" in c for c in configs]
    if installed < FIRST_COMPOSITE:
        if any(composite):
            raise NoEnvironment(
                f"env_args' controller is a robosuite 1.5 composite config (body_parts); robosuite {version} builds part controllers only"
            )
        return config, ""
    if all(composite):
        return config, ""
    from robosuite.controllers.composite.composite_controller_factory import (
        refactor_composite_controller_config,
    )

    if len(robots) != 1 or not all(isinstance(c, dict) and c.get("type") for c in configs):
        raise NoEnvironment(f"env_args' controller {configs[0]!r:.80} is not a config robosuite {version} builds")
    old = configs[0]["type"]
    converted = refactor_composite_controller_config(configs[0], robots[0], list(ARMS))
    return converted, f"controller: a robosuite 1.4-style {old} config converted by robosuite {version}'s refactor_composite_controller_config"


class _QuietFilter(logging.Filter):
    """robosuite logs its import-time setup advice and every controller file it loads; keep errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _import_robosuite() -> Any:
    logger = logging.getLogger("robosuite_logs")
    if not any(isinstance(f, _QuietFilter) for f in logger.filters):
        logger.addFilter(_QuietFilter())
    try:
        import robosuite
    except ImportError as exc:
        raise NoEnvironment(f"robosuite is not installed ({exc})") from None
    return robosuite


def build(setup: Setup) -> _Episodes:
    """The process's environment for ``setup``, built and checked on first use (a second or two)."""
    if setup not in _ENVS:
        _ENVS[setup] = _make(setup)
    return _Episodes(setup, _ENVS[setup])


def _make(setup: Setup) -> Any:
    robosuite = _import_robosuite()
    try:
        env = robosuite.make(setup.env_name, **json.loads(setup.env_kwargs))
    except Exception as exc:  # any failure to build is a reason to stay offline, named
        raise NoEnvironment(f"robosuite {robosuite.__version__} cannot build {setup.env_name} from env_args: {type(exc).__name__}: {exc}") from None
    for key in setup.state_keys:  # robomimic reads observables robosuite leaves off (joint positions)
        if key in env.observation_names:
            env.modify_observable(observable_name=key, attribute="active", modifier=True)
    missing = [c for c in setup.cameras if c not in env.sim.model.camera_names]
    if missing:
        raise NoEnvironment(f"{setup.env_name} has no camera {missing[0]!r}; it has {', '.join(env.sim.model.camera_names)}")
    if env.action_dim != setup.action_dim:
        raise NoEnvironment(f"{setup.env_name} takes {env.action_dim} action values; the dataset has {setup.action_dim}")
    state = _Episodes(setup, env).observe(env.reset())["state"]
    if state.shape != (setup.state_dim,):
        raise NoEnvironment(
            f"{setup.env_name} gives {state.shape[0]} state values for {', '.join(setup.state_keys)}; the dataset has {setup.state_dim}"
        )
    return env


class _Episodes:
    """A robosuite environment as the kit's episode loop drives it (``hpt_kit.rollout.EpisodeEnv``)."""

    def __init__(self, setup: Setup, env: Any):
        self.setup, self.env = setup, env
        self.action_dim, self.max_steps = setup.action_dim, setup.max_steps
        self.action_low, self.action_high = env.action_spec
        self._renderer = None

    def reset(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """An episode whose robot noise and object placement come from ``rng`` alone."""
        # robosuite handed its generator to the placement samplers when it built the model; a soft
        # reset keeps those references, so each sampler gets the episode's generator too.
        self.env.rng = rng
        samplers = [getattr(self.env, "placement_initializer", None)]
        while samplers:
            sampler = samplers.pop()
            if sampler is not None:
                sampler.rng = rng
                samplers.extend(getattr(sampler, "samplers", {}).values())
        return self.observe(self.env.reset())

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
        raw, reward, _, _ = self.env.step(action)
        return self.observe(raw), float(reward), self.success()

    def success(self) -> bool:
        done = self.env._check_success()
        return bool(done["task"] if isinstance(done, dict) else done)

    def observe(self, raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The observation as the import built it: the state keys concatenated, the views fitted."""
        parts = []
        for key in self.setup.state_keys:
            if key == STATES_KEY:
                parts.append(self.env.sim.get_state().flatten())
                continue
            source = OBJECT_STATE if key == OBJECT_KEY else key
            if source not in raw:
                known = ", ".join(sorted(raw))
                raise NoEnvironment(f"robosuite's {self.setup.env_name} gives no observation {source!r}; it gives {known}")
            parts.append(np.asarray(raw[source]).reshape(-1))
        out = {"state": np.concatenate(parts).astype(np.float32)}
        if self.setup.cameras:
            views = [np.asarray(raw[f"{c}{layout.IMAGE_SUFFIX}"])[::-1] for c in self.setup.cameras]
            fitted = [fit_frames(v[None], self.setup.height, self.setup.width, self.setup.fit)[0] for v in views]
            out["image"] = np.stack(fitted)  # (views, H, W, 3)
        return out

    def frame(self) -> np.ndarray:
        import mujoco

        sim = self.env.sim
        if self._renderer is None:
            self._renderer = mujoco.Renderer(sim.model._model, VIDEO_SIZE, VIDEO_SIZE)
        camera = VIDEO_CAMERA if VIDEO_CAMERA in sim.model.camera_names else sim.model.camera_names[0]
        self._renderer.update_scene(sim.data._data, camera=camera)
        return self._renderer.render()


def details(setup: Setup) -> dict[str, Any]:
    """What a result says about where it ran."""
    import mujoco

    kwargs = json.loads(setup.env_kwargs)
    return {
        "simulator": "robosuite",
        "robosuite_version": _import_robosuite().__version__,
        "mujoco_version": mujoco.__version__,
        "env_name": setup.env_name,
        "robots": kwargs.get("robots"),
        "state_keys": list(setup.state_keys),
        "cameras": list(setup.cameras),
        "max_episode_steps": setup.max_steps,
        "adjusted": list(setup.adjusted),
    }


def rollout(setup: Setup, controller: Controller, request: RolloutRequest) -> RolloutResult:
    source = EpisodeSource(build(setup), controller)
    return evaluate(setup.name, request, [source], video_fps=setup.control_hz, details=details(setup))


def rollout_envs(setup: Setup, request: RolloutRequest) -> RolloutEnvs:
    """The same episodes for worker processes, each building its own environment."""
    return RolloutEnvs(setup.name, (EnvFactory(partial(build, setup)),), video_fps=setup.control_hz, details=details(setup))


def _no_conversion(name: str, request: Any) -> Any:
    raise SpecError(f"embodiment {name!r} is an imported dataset; import it again (hpt-kit import robomimic) instead of converting")
