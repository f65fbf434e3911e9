"""Data from outside, end to end through the real ``hpt-kit`` command: a robomimic HDF5 file (written
with h5py in robomimic's layout) -> import -> pre-training mixed with a simulator embodiment ->
transfer onto another imported dataset -> info -> eval (offline metrics: no simulator behind it)."""

import json
import os

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


def _fixture_writer(path: str, function: str):
    """A writer from an importer plugin's own test fixtures (they write each format with its real
    library), loaded by file path: plugin test folders are not packages."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"fixtures_{function}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, function)


def test_one_recipe_pretrains_on_a_simulator_and_a_dataset_of_each_format(tmp_path, data_root):
    write_lerobot = _fixture_writer("plugins/lerobot/tests/lerobot_fixtures.py", "write_lerobot")
    write_rlds = _fixture_writer("plugins/rlds/tests/rlds_fixtures.py", "write_rlds")
    sources = {
        "lerobot": write_lerobot(tmp_path / "lr", episodes=6, steps=10, frame_size=(24, 32), cameras=("front",)),
        "rlds": write_rlds(tmp_path / "rl", episodes=6, steps=10, frame_size=(24, 32), cameras=("image",)),
        "robomimic": tmp_path / "rm.hdf5",
    }
    write_robomimic(sources["robomimic"], demos=6, steps=10, seed=2)
    recipe = (ROOT / "recipes" / "smoke.toml").read_text().replace("steps = 40", "steps = 10")
    for fmt, source in sources.items():
        hpt("import", fmt, source, "--name", f"from-{fmt}", "--image-size", 16)
        recipe += f'\n[[datasets]]\nembodiment = "from-{fmt}"\nweight = 0.5\n'
        if fmt != "robomimic":  # frames through the resnet stem; no download here: its seeded initialisation
            recipe += 'stem_options = { image = { weights = "none" } }\n'
    (tmp_path / "all.toml").write_text(recipe)
    hpt("pretrain", tmp_path / "all.toml", "--out", tmp_path / "pre")
    last = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()][-1]
    assert set(last["val_loss"]) == {"mujoco-arm3", "from-lerobot", "from-rlds", "from-robomimic"}
    assert all(np.isfinite(v) for v in last["val_loss"].values())


def test_a_dataset_on_the_hub_imports_from_the_cache_offline(tmp_path, data_root):
    from tests.weights.test_hub import cache_repo

    write_lerobot = _fixture_writer("plugins/lerobot/tests/lerobot_fixtures.py", "write_lerobot")
    source = write_lerobot(tmp_path / "src", episodes=3, steps=8, frame_size=(24, 32), cameras=("front",))
    hub = tmp_path / "hub"
    cache_repo(hub, "alice/toy-lerobot", source, ref="v1", kind="datasets")
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    described = json.loads(hpt("import", "lerobot", "hf://datasets/alice/toy-lerobot@v1", "--describe", "--json", env=env).stdout)
    assert described["episodes"] == 3 and described["location"] == "hf://datasets/alice/toy-lerobot@v1"
    out = json.loads(hpt("import", "lerobot", "hf://datasets/alice/toy-lerobot@v1", "--name", "toy", "--json", env=env).stdout)
    assert out["episodes"] == 3 and out["notes"]["import"]["source"] == "hf://datasets/alice/toy-lerobot@v1"
    missing = hpt("import", "lerobot", "hf://datasets/alice/nothing", env=env, check=False)
    assert missing.returncode == 1 and "hf://datasets/alice/nothing: not in the local cache" in missing.stderr
