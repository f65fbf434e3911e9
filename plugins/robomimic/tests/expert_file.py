"""A robomimic file as robomimic writes one for robosuite's Lift (or Stack), made by the kit's own scripted
expert (``hpt_kit_robosuite``): ``data`` with ``env_args`` (the environment's name, robosuite's
version, type 1 and the keyword arguments it was built with, the kit's composite OSC_POSE controller
among them) and ``total``; per demo ``actions``, ``obs/<key>`` and ``next_obs/<key>`` (robomimic's
low-dim keys, ``object`` being robosuite's ``object-state``), ``rewards``, ``dones``, ``states`` and
the attributes ``num_samples`` and ``model_file``."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")


def env_kwargs(controller: dict) -> dict:
    """The keyword arguments robomimic's wrapper records for a low-dim dataset (its serialize())."""
    return {
        "has_renderer": False,
        "has_offscreen_renderer": False,
        "ignore_done": True,
        "use_object_obs": True,
        "use_camera_obs": False,
        "camera_depths": False,
        "robots": ["Panda"],
        "controller_configs": controller,
        "control_freq": 20,
        "reward_shaping": True,
        "camera_names": ["agentview"],
        "camera_heights": 84,
        "camera_widths": 84,
    }


def write_expert_demos(path: Path, episodes: int = 4, seed: int = 0, task: str = "Lift", env_name: str | None = None) -> Path:
    """``episodes`` successful expert demos of ``task`` (Lift or Stack) with a Panda; ``env_name`` is
    what env_args say (default: the task; another name makes a file whose environment cannot be
    matched)."""
    from hpt_kit.rollout import episode_rng  # hpt_kit first: it picks the headless GL before MuJoCo loads
    from hpt_kit_robosuite.env import SuiteEnv, controller_config, versions
    from hpt_kit_robosuite.expert import PickExpert
    from hpt_kit_robosuite.robots import ROBOTS, TASKS

    robot = ROBOTS[0]
    assert robot.robosuite_name == "Panda"
    (chosen,) = [t for t in TASKS if t.robosuite_name == task]
    env = SuiteEnv(robot, chosen)
    expert = PickExpert(env)
    kwargs = env_kwargs(controller_config(robot))
    env_args = {"env_name": env_name or task, "env_version": versions()["robosuite_version"], "type": 1, "env_kwargs": kwargs}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(env_args)
        total, kept, attempt = 0, 0, 0
        while kept < episodes:
            demo = _episode(env, expert, episode_rng(seed, 0, attempt), chosen.max_steps)
            attempt += 1
            if demo is None:
                continue
            group = data.create_group(f"demo_{kept}")
            group.attrs["num_samples"] = len(demo["actions"])
            group.attrs["model_file"] = env.env.sim.model.get_xml()
            for key, values in demo.items():
                group.create_dataset(key, data=values)
            total += len(demo["actions"])
            kept += 1
        data.attrs["total"] = total
        f.create_dataset("mask/train", data=np.array([f"demo_{i}".encode() for i in range(episodes)]))
    return path


def _episode(env, expert, rng: np.random.Generator, max_steps: int) -> dict[str, np.ndarray] | None:
    """One expert episode in robomimic's per-demo arrays, or None if the expert failed."""
    env.reset(rng)
    expert.reset()
    obs, actions, rewards, states = [], [], [], []
    success = False
    for _ in range(max_steps):
        obs.append(_observation(env.obs))
        states.append(env.env.sim.get_state().flatten())
        action = expert.act({})
        _, reward, success = env.step(action)
        actions.append(action)
        rewards.append(reward)
        if success:
            break
    if not success:
        return None
    obs.append(_observation(env.obs))
    demo = {
        "actions": np.asarray(actions, np.float64),
        "rewards": np.asarray(rewards, np.float64),
        "dones": np.eye(1, len(actions), len(actions) - 1, dtype=np.int64)[0],
        "states": np.asarray(states),
    }
    for key in OBS_KEYS:
        demo[f"obs/{key}"] = np.stack([o[key] for o in obs[:-1]])
        demo[f"next_obs/{key}"] = np.stack([o[key] for o in obs[1:]])
    return demo


def _observation(raw: dict) -> dict[str, np.ndarray]:
    return {k: np.array(raw["object-state"] if k == "object" else raw[k]) for k in OBS_KEYS}


def add_camera_frames(path: Path, camera: str = "agentview", size: int = 32) -> Path:
    """Add ``obs/<camera>_image`` to every demo of a file made by :func:`write_expert_demos`, the way
    robomimic's ``dataset_states_to_obs.py`` makes image datasets: an environment built from env_args
    with the camera on, set to each recorded MuJoCo state, its frame turned upright (``[::-1]``, as
    robomimic's robosuite wrapper returns it); env_args then name the camera and its size."""
    import robosuite

    with h5py.File(path, "r+") as f:
        data = f["data"]
        env_args = json.loads(data.attrs["env_args"])
        kwargs = env_args["env_kwargs"]
        kwargs.update(camera_names=[camera], camera_heights=size, camera_widths=size)
        env = robosuite.make(
            env_args["env_name"], **{**kwargs, "has_offscreen_renderer": True, "use_camera_obs": True, "hard_reset": False}
        )
        env.reset()
        for name in data:
            frames = []
            for state in data[name]["states"][()]:
                env.sim.set_state_from_flattened(state)
                env.sim.forward()
                frames.append(env._get_observations(force_update=True)[f"{camera}_image"][::-1])
            data[name].create_dataset(f"obs/{camera}_image", data=np.stack(frames))
        data.attrs["env_args"] = json.dumps(env_args)
        env.close()
    return path
