"""Data from outside, end to end through the real ``hpt-kit`` command: a robomimic HDF5 file (written
with h5py in robomimic's layout) -> import -> pre-training mixed with a simulator embodiment ->
transfer onto another imported dataset -> info -> eval (offline metrics: no simulator behind it)."""

import json

import numpy as np
import pytest

from tests.cli.test_end_to_end import hpt
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def write_robomimic(path, demos: int, steps: int, seed: int) -> None:
    """A low-dim robomimic file: the action drives the end effector towards the object."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        env_args = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"], "control_freq": 20}}
        data.attrs["env_args"] = json.dumps(env_args)
        total = 0
        for i in range(demos):
            eef = np.cumsum(rng.normal(scale=0.01, size=(steps, 3)), axis=0) + rng.uniform(-0.2, 0.2, 3)
            obj = np.tile(np.concatenate([rng.uniform(-0.2, 0.2, 3), [1.0]]), (steps, 1))
            actions = np.clip(5 * (obj[:, :3] - eef), -1, 1)
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = steps
            demo.create_dataset("obs/robot0_eef_pos", data=eef)
            demo.create_dataset("obs/object", data=obj)
            demo.create_dataset("actions", data=np.concatenate([actions, np.zeros((steps, 1))], axis=1))
            demo.create_dataset("rewards", data=np.zeros(steps))
            demo.create_dataset("dones", data=np.zeros(steps, dtype=np.int64))
            total += steps
        data.attrs["total"] = total
        f.create_dataset("mask/train", data=np.array([f"demo_{i}".encode() for i in range(demos - 2)]))


def test_import_pretrain_with_a_simulator_transfer_onto_imported_info_and_offline_eval(tmp_path, data_root):
    source, target = tmp_path / "lift.hdf5", tmp_path / "lift_target.hdf5"
    write_robomimic(source, demos=12, steps=30, seed=0)
    write_robomimic(target, demos=10, steps=30, seed=1)
    imported = json.loads(hpt("import", "robomimic", source, "--name", "lift-src", "--json").stdout)
    assert imported["path"] == str(data_root / "lift-src.zarr")
    assert imported["episodes"] == 12 and imported["state_dim"] == 7 and imported["action_dim"] == 4
    hpt("import", "robomimic", target, "--name", "lift-new", "--option", "filter_key=train")
    listed = {e["name"]: e for e in json.loads(hpt("list", "--json").stdout)["embodiments"]}
    assert listed["lift-src"]["data_only"] and listed["lift-new"]["plugin"] == "imported (robomimic)"

    recipe = tmp_path / "mix.toml"
    recipe.write_text(
        (ROOT / "recipes" / "smoke.toml").read_text()
        + '\n[[datasets]]\nembodiment = "lift-src"\nweight = 1.0\n'
    )
    pre = tmp_path / "pre"
    hpt("pretrain", recipe, "--out", pre)
    metrics = [json.loads(x) for x in (pre / "metrics.jsonl").read_text().splitlines()]
    assert set(metrics[-1]["val_loss"]) == {"mujoco-arm3", "lift-src"}

    xfer = tmp_path / "xfer"
    hpt("transfer", "--embodiment", "lift-new", "--trunk", pre, "--freeze-trunk", "--steps", 30, "--out", xfer)
    info = json.loads(hpt("info", xfer, "--json").stdout)
    assert "lift-new" in info["embodiments"]
    report = json.loads(hpt("eval", xfer, "--json").stdout)
    assert report["mode"] == "offline" and report["embodiment"] == "lift-new"
    assert report["held_out_episodes"] >= 1 and len(report["action_mae"]) == 4
    assert all(np.isfinite(report["action_mae"])) and report["val_loss"] > 0
    refused = hpt("eval", xfer, "--expert", check=False)
    assert refused.returncode != 0 and "has no simulator" in refused.stderr
