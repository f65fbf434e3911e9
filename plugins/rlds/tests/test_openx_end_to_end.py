"""Open-X end to end, through the real ``hpt-kit`` command: ``openx import`` of two sources with their
datasets' TFDS layouts (dict actions) -> ``pretrain --plan`` -> pretrain a tiny trunk on one of them
plus a simulator embodiment -> transfer to the other -> offline evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openx_fixtures import write_openx

pytestmark = pytest.mark.slow
NO_DOWNLOAD = 'datasets[0].stem_options={image={weights="none"}}'  # a seeded ResNet: nothing fetched


def hpt(*args, env: dict) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("hpt-kit")
    done = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"hpt-kit {' '.join(map(str, args))}:\n{done.stderr}"
    return done


def test_openx_import_plan_pretrain_transfer_eval(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "HPT_KIT_DATA": str(data)}
    for name in ("viola", "toto"):
        source = write_openx(tmp_path / "src", name, episodes=6, steps=8)
        imported = json.loads(hpt("openx", "import", name, source, "--image-size", "32", "--json", env=env).stdout)
        assert imported["episodes"] == 6 and imported["notes"]["import"]["extra"]["openx"]["name"] == name
    recipe = tmp_path / "openx-smoke.toml"
    recipe.write_text(
        '[run]\nname = "openx-smoke"\n[trunk]\npreset = "tiny"\n'
        '[[datasets]]\nembodiment = "openx-viola"\nconvert = false\nstem_options = { image = { weights = "none" } }\n'
        '[[datasets]]\nembodiment = "mujoco-arm3"\nepisodes = 4\n'
        "[train]\nsteps = 6\nbatch_size = 4\nwarmup_steps = 1\nval_every = 3\nval_batches = 1\ncheckpoint_every = 6\nlog_every = 3\n"
    )
    plan = json.loads(hpt("pretrain", recipe, "--plan", "--json", env=env).stdout)
    assert [d["present"] for d in plan["datasets"]] == [True, False]
    assert plan["missing"] == [["mujoco-arm3", "hpt-kit convert mujoco-arm3 --episodes 4"]]
    assert not (data / "mujoco-arm3.zarr").exists()

    pre = tmp_path / "pre"
    hpt("pretrain", recipe, "--out", pre, env=env)  # converts mujoco-arm3, trains on both
    metrics = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    assert set(metrics[-1]["val_loss"]) == {"openx-viola", "mujoco-arm3"}

    xfer = tmp_path / "xfer"
    hpt("transfer", "--embodiment", "openx-toto", "--trunk", pre, "--freeze-trunk", "--steps", 4, "--out", xfer, "--set", NO_DOWNLOAD, env=env)
    result = json.loads(hpt("eval", xfer, "--json", env=env).stdout)
    assert result["embodiment"] == "openx-toto" and result["mode"] == "offline" and result["held_out_episodes"] >= 1


def test_a_dataset_without_state_trains_and_evaluates_through_its_image_and_language_stems(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "HPT_KIT_DATA": str(data)}
    source = write_openx(tmp_path / "src", "roboturk", episodes=6, steps=8)
    imported = json.loads(hpt("openx", "import", "roboturk", source, "--image-size", "32", "--json", env=env).stdout)
    assert imported["state_dim"] == 0 and imported["action_dim"] == 7
    run = tmp_path / "run"
    hpt("transfer", "--embodiment", "openx-roboturk", "--from-scratch", "--steps", 3, "--out", run,
        "--set", "trunk.preset=tiny", "--set", NO_DOWNLOAD, env=env)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert set(metrics[-1]["val_loss"]) == {"openx-roboturk"}
    result = json.loads(hpt("eval", run, "--json", env=env).stdout)
    assert result["embodiment"] == "openx-roboturk" and result["mode"] == "offline" and result["held_out_episodes"] >= 1
    assert len(result["action_mae"]) == 7 and all(v == v for v in result["action_mae"])  # finite, not NaN

    # served over loopback: a robot sends its camera and instruction, no state
    import numpy as np
    from hpt_kit.client import PolicyClient, ServerError

    server = subprocess.Popen([str(Path(sys.executable).with_name("hpt-kit")), "serve", str(run), "--port", "0"],
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [""]
        while not lines[-1].startswith("serving"):
            lines.append(server.stderr.readline())
            assert server.poll() is None, "".join(lines)
        client = PolicyClient(lines[-1].split(" on ")[1].split(" ")[0], "openx-roboturk")
        client.reset()
        action = client.act({"image": np.zeros((1, 32, 32, 3), np.uint8), "instruction": "stack the bowls"})
        assert action.shape == (7,) and np.isfinite(action).all()
        with pytest.raises(ServerError, match="observation.image: missing"):
            client.act({"state": np.zeros(3, np.float32)})
    finally:
        server.terminate()
        server.wait(timeout=30)
