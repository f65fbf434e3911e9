"""The fault suite's tools: the real ``hpt-kit`` command in subprocesses, one converted dataset shared
by the session (each test that damages data copies it first), a short run recipe with frequent
checkpoints, and one uninterrupted reference run that interrupted runs must reproduce bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import HPT_KIT, ROOT

INJECT = Path(__file__).with_name("inject.py")
STEPS = 60

RECIPE = """
[run]
name = "faults"
seed = {seed}

[trunk]
preset = "{preset}"

[[datasets]]
embodiment = "mujoco-arm3"
path = "{data}"
convert = false

[train]
steps = {steps}
batch_size = 16
lr = {lr}
warmup_steps = 5
val_every = 20
val_batches = 1
checkpoint_every = 10
keep_checkpoints = {keep}
log_every = 5
threads = 1
{extra}
"""


def write_recipe(path: Path, data: Path, seed: int = 0, preset: str = "tiny", steps: int = STEPS, lr: str = "1e-3",
                 keep: int = 3, extra: str = "") -> Path:
    path.write_text(RECIPE.format(seed=seed, preset=preset, data=data, steps=steps, lr=lr, keep=keep, extra=extra))
    return path


def hpt(*args, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    out = subprocess.run([HPT_KIT, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=os.environ)
    if check and out.returncode != 0:
        raise AssertionError(f"hpt-kit {' '.join(map(str, args))} failed ({out.returncode}):\n{out.stderr}")
    return out


def injected(fault: str, *args) -> subprocess.CompletedProcess:
    """``hpt-kit ARGS`` with ``fault`` injected (see inject.py); it dies by SIGKILL at that point."""
    return subprocess.run([sys.executable, str(INJECT), fault, *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([HPT_KIT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def logged_step(run: Path) -> int:
    """The newest step in ``metrics.jsonl`` (0 before any)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(x).get("step", 0) for x in lines[-3:] if x.endswith("}")]
    return max(steps, default=0)


def wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while logged_step(run) < step:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before step {step}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"step {step} not reached in {timeout} s")
        time.sleep(0.02)


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "latest" / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def metric_steps(run: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def leftovers(run: Path) -> list[str]:
    """Anything in the run directory that a finished, healthy run would not hold."""
    ckpt = run / "checkpoints"
    odd = [p.name for p in ckpt.iterdir() if p.name.startswith(".")] if ckpt.is_dir() else []
    odd += [p.name for p in run.iterdir() if p.name.startswith(".")]
    return odd


@pytest.fixture(scope="session")
def arm3(tmp_path_factory) -> Path:
    """mujoco-arm3, 12 episodes, converted once by the real command; tests that damage it copy it."""
    path = tmp_path_factory.mktemp("faults-data") / "mujoco-arm3.zarr"
    hpt("convert", "mujoco-arm3", "--episodes", 12, "--out", path)
    return path


@pytest.fixture
def data(arm3, tmp_path) -> Path:
    """This test's own copy of the dataset, free to damage."""
    path = tmp_path / "data" / "mujoco-arm3.zarr"
    shutil.copytree(arm3, path)
    return path


@pytest.fixture(scope="session")
def reference(arm3, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the recipe run without interruption."""
    root = tmp_path_factory.mktemp("faults-reference")
    hpt("pretrain", write_recipe(root / "recipe.toml", arm3), "--out", root / "run")
    return weights(root / "run")


@pytest.fixture(scope="session")
def trained(arm3, tmp_path_factory) -> Path:
    """A finished 40-step run: checkpoints at steps 20, 30 and 40 (latest) and ``best``. Tests that
    damage it copy it first (``run_copy``)."""
    root = tmp_path_factory.mktemp("faults-trained")
    hpt("pretrain", write_recipe(root / "recipe.toml", arm3, steps=40), "--out", root / "run")
    return root / "run"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """This test's own copy of ``trained``, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run", symlinks=True))
