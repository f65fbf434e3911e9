"""The user's path through the real ``hpt-kit`` command, in subprocesses:
convert -> pretrain -> transfer --freeze-trunk to another embodiment -> eval --json -> info --json."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import HPT_KIT, ROOT

pytestmark = pytest.mark.slow


def hpt(*args, env=None, check=True):
    out = subprocess.run([HPT_KIT, *map(str, args)], capture_output=True, text=True, env=env or os.environ, cwd=ROOT)
    if check and out.returncode != 0:
        raise AssertionError(f"hpt-kit {' '.join(map(str, args))} failed ({out.returncode}):\n{out.stderr}")
    return out


def test_convert_pretrain_transfer_eval(tmp_path, data_root):
    converted = json.loads(hpt("convert", "mujoco-arm4", "--episodes", 12, "--json").stdout)
    assert converted["episodes"] == 12 and converted["notes"]["expert_success_rate"] >= 0.95
    assert converted["path"] == str(data_root / "mujoco-arm4.zarr")

    pre = tmp_path / "pre"
    hpt("pretrain", ROOT / "recipes" / "smoke.toml", "--out", pre)  # converts mujoco-arm3 itself
    assert (data_root / "mujoco-arm3.zarr").is_dir()
    metrics = [json.loads(x) for x in (pre / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["event"] == "start" and metrics[-1]["val_loss"]["mujoco-arm3"] > 0

    xfer = tmp_path / "xfer"
    hpt("transfer", "--embodiment", "mujoco-arm4", "--trunk", pre, "--freeze-trunk", "--steps", 30, "--out", xfer)
    trunk_before = load_file(str(pre / "checkpoints" / "latest" / "model.safetensors"))
    after = load_file(str(xfer / "checkpoints" / "latest" / "model.safetensors"))
    trunk_keys = [k for k in trunk_before if k.startswith("trunk.")]
    assert trunk_keys and all(torch.equal(trunk_before[k], after[k]) for k in trunk_keys)
    # The new stem and head trained: they differ from their initialisation (the same seed's fresh model).
    from hpt_kit.core.registry import load_registry
    from hpt_kit.models.hpt import HPT
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(xfer)
    torch.manual_seed(0)
    fresh = HPT(ckpt.trunk_config, ckpt.specs, ckpt.stats, load_registry(embodiments=False)).state_dict()
    new_keys = [k for k in after if k.startswith(("stems.mujoco-arm4.", "heads.mujoco-arm4."))]
    assert new_keys and not any(k.startswith("stems.mujoco-arm3") for k in after)
    # Except the state stem's query projection: with one state token per step (observation_horizon 1)
    # the softmax over a single key is 1 whatever the query, so the query gets no gradient (its weight
    # moves by weight decay only, its bias not at all).
    same = [k for k in new_keys if not k.startswith("normalizers") and torch.equal(fresh[k], after[k])]
    assert same in ([], ["stems.mujoco-arm4.state.attend.q.bias"]), same
    assert not torch.equal(fresh["stems.mujoco-arm4.state.attend.kv.weight"], after["stems.mujoco-arm4.state.attend.kv.weight"])

    result = json.loads(hpt("eval", xfer, "--episodes", 3, "--json", "--expert").stdout)
    assert result["embodiment"] == "mujoco-arm4" and result["episodes"] == 3
    assert 0.0 <= result["success_rate"] <= 1.0 and len(result["successes"]) == 3
    assert result["expert_success_rate"] >= 2 / 3

    info = json.loads(hpt("info", xfer, "--json").stdout)
    assert info["frozen_trunk"] is True and info["trunk"]["preset"] == "tiny"
    assert info["parameters"]["trunk"] == sum(t.numel() for k, t in after.items() if k.startswith("trunk."))
    assert len(info["sha256"]) == 64 and "mujoco-arm4" in info["embodiments"]

    # Resuming a finished run is a no-op that succeeds; reusing its folder without --resume is refused.
    hpt("pretrain", ROOT / "recipes" / "smoke.toml", "--out", pre, "--resume")
    refused = hpt("pretrain", ROOT / "recipes" / "smoke.toml", "--out", pre, check=False)
    assert refused.returncode == 1 and "pass --resume" in refused.stderr


def test_errors_are_one_line_and_name_the_thing(tmp_path):
    out = hpt("convert", "no-such-robot", check=False)
    assert out.returncode == 1 and "unknown embodiment 'no-such-robot'" in out.stderr and "mujoco-arm3" in out.stderr
    out = hpt("eval", tmp_path / "nowhere", check=False)
    assert out.returncode == 1 and "no such checkpoint or run directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_add_embodiment_installs_registers_and_converts(tmp_path):
    package = tmp_path / "my_arm"
    hpt("add-embodiment", "my_arm", "--dir", package)
    again = hpt("add-embodiment", "my_arm", "--dir", package, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = hpt("add-embodiment", "my-arm", "--dir", tmp_path / "x", check=False)
    assert bad.returncode == 1 and "invalid embodiment name 'my-arm'" in bad.stderr
    assert not (tmp_path / "x").exists()

    # Install into a private folder so the test leaves the environment as it found it.
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", site, package],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    listing = json.loads(hpt("list", "--json", env=env).stdout)
    mine = [e for e in listing["embodiments"] if e["name"] == "my_arm"]
    assert mine and mine[0]["distribution"] == "hpt-kit-my_arm" and listing["errors"] == []
    out = json.loads(hpt("convert", "my_arm", "--episodes", 3, "--out", tmp_path / "my.zarr", "--json", env=env).stdout)
    assert out["episodes"] == 3 and out["notes"]["expert_success_rate"] >= 0.95
    checked = hpt("check", "my_arm", "--expert", 5, env=env).stdout
    assert "ok my_arm (hpt-kit-my_arm" in checked and "scripted expert: " in checked and "of 5 episodes" in checked
    # The generated package's own test passes too.
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", package / "tests"], capture_output=True, text=True, env=env)
    assert test.returncode == 0, test.stdout + test.stderr
