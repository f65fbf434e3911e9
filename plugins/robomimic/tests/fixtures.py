"""robomimic HDF5 files written with h5py in robomimic's exact layout, for the tests and for throughput
measurements (``python plugins/robomimic/tests/fixtures.py OUT.hdf5 --episodes 200 --steps 300
--frame-size 84 84 --cameras agentview robot0_eye_in_hand`` writes a multi-GB file one demo at a time).

Values are deterministic per demo (seeded by ``seed`` and the demo number) so tests can compare the
importer's output with what was written.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

LOW_DIM = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "robot0_joint_pos": 7}


def env_args(
    env_name: str = "Lift",
    robots: Sequence[str] = ("Panda",),
    cameras: Sequence[str] = (),
    frame_size: tuple[int, int] = (84, 84),
    **extra,
) -> dict:
    """env_args as robomimic 0.3 / robosuite 1.4 write them for a robosuite task."""
    return {
        "env_name": env_name,
        "env_version": "1.4.1",
        "type": 1,
        "env_kwargs": {
            "has_renderer": False,
            "has_offscreen_renderer": bool(cameras),
            "ignore_done": True,
            "use_object_obs": True,
            "use_camera_obs": bool(cameras),
            "control_freq": 20,
            "controller_configs": {
                "type": "OSC_POSE",
                "input_max": 1,
                "input_min": -1,
                "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
                "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
                "kp": 150,
                "damping": 1,
                "impedance_mode": "fixed",
                "control_delta": True,
                "interpolation": None,
                "ramp_ratio": 0.2,
            },
            "robots": list(robots),
            "camera_depths": False,
            "camera_heights": frame_size[0],
            "camera_widths": frame_size[1],
            "camera_names": list(cameras),
            "reward_shaping": False,
        },
        **extra,
    }


def _demo_obs(rng: np.random.Generator, steps: int, object_dim: int, frame_size, cameras) -> dict:
    obs = {k: rng.normal(size=(steps + 1, d)) for k, d in LOW_DIM.items()}
    obs["object"] = rng.normal(size=(steps + 1, object_dim))
    for cam in cameras:
        obs[f"{cam}_image"] = rng.integers(0, 256, size=(steps + 1, *frame_size, 3), dtype=np.uint8)
    return obs


def write_demo(
    data: h5py.Group,
    number: int,
    steps: int,
    *,
    object_dim: int = 10,
    action_dim: int = 7,
    frame_size: tuple[int, int] = (48, 64),
    cameras: Sequence[str] = ("agentview",),
    seed: int = 0,
    compression: str | None = None,
) -> h5py.Group:
    """data/demo_<number>: actions, rewards, dones, states, obs/ and next_obs/ (obs shifted by one)."""
    rng = np.random.default_rng([seed, number])
    demo = data.create_group(f"demo_{number}")
    demo.attrs["num_samples"] = steps
    demo.attrs["model_file"] = "<mujoco model='base'><worldbody/></mujoco>"
    demo.create_dataset("actions", data=rng.uniform(-1, 1, size=(steps, action_dim)))
    rewards = np.zeros(steps)
    rewards[-1:] = 1.0
    demo.create_dataset("rewards", data=rewards)
    dones = np.zeros(steps, dtype=np.int64)
    dones[-1:] = 1
    demo.create_dataset("dones", data=dones)
    demo.create_dataset("states", data=rng.normal(size=(steps, 32)))
    obs = _demo_obs(rng, steps, object_dim, frame_size, cameras)
    for group, rows in (("obs", slice(0, steps)), ("next_obs", slice(1, steps + 1))):
        for key, values in obs.items():
            opts = {"compression": compression} if values.dtype == np.uint8 and compression else {}
            demo.create_dataset(f"{group}/{key}", data=values[rows], **opts)
    return demo


def write_robomimic(
    path: str | Path,
    episodes: int = 3,
    steps: int | Sequence[int] = 10,
    frame_size: tuple[int, int] = (48, 64),
    cameras: Sequence[str] = ("agentview",),
    *,
    object_dim: int = 10,
    action_dim: int = 7,
    env: dict | None = None,
    masks: dict[str, Sequence[int]] | None = None,
    seed: int = 0,
    compression: str | None = None,
) -> Path:
    """Write a robomimic HDF5 file with ``episodes`` demos (``steps`` each, or one length per demo),
    low-dim obs, ``<camera>_image`` frames of ``frame_size`` (height, width), env_args and filter keys
    (default: ``train`` = all but the last demo, ``valid`` = the last one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = [steps] * episodes if isinstance(steps, int) else list(steps)
    assert len(lengths) == episodes, "one length per demo"
    if masks is None:
        masks = {"train": range(episodes - 1), "valid": [episodes - 1]} if episodes > 1 else {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for number, length in enumerate(lengths):
            write_demo(
                data, number, length, object_dim=object_dim, action_dim=action_dim,
                frame_size=frame_size, cameras=cameras, seed=seed, compression=compression,
            )  # fmt: skip
        data.attrs["total"] = int(sum(lengths))
        data.attrs["env_args"] = json.dumps(
            env if env is not None else env_args(cameras=cameras, frame_size=frame_size)
        )
        for name, numbers in masks.items():
            f[f"mask/{name}"] = np.array([f"demo_{n}" for n in numbers], dtype="S")
    return path


def write_bad_robomimic(path: str | Path) -> Path:
    """Five demos with the faults a real file can have: demo_1 has a NaN in obs/object at step 2,
    demo_2 has one step, demo_3's obs/object is 12 wide instead of 10, every demo has a string
    dataset obs/note, and demo_4 lacks obs/robot0_eef_quat."""
    path = write_robomimic(path, episodes=5, steps=[6, 6, 1, 6, 6], frame_size=(8, 8), cameras=("agentview",))
    with h5py.File(path, "a") as f:
        data = f["data"]
        data["demo_1/obs/object"][2, 0] = np.nan
        del data["demo_3/obs/object"]
        data["demo_3/obs/object"] = np.ones((6, 12))
        del data["demo_4/obs/robot0_eef_quat"]
        for name in data:
            n = data[name].attrs["num_samples"]
            data[f"{name}/obs/note"] = np.array([b"grasp"] * n, dtype="S8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic robomimic HDF5 file.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--frame-size", type=int, nargs=2, default=(84, 84), metavar=("H", "W"))
    parser.add_argument("--cameras", nargs="*", default=["agentview", "robot0_eye_in_hand"])
    parser.add_argument("--compression", default=None, help="e.g. gzip (frames only)")
    args = parser.parse_args()
    out = write_robomimic(
        args.out,
        args.episodes,
        args.steps,
        tuple(args.frame_size),
        args.cameras,
        compression=args.compression,
    )
    print(f"{out}: {out.stat().st_size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
