"""Damaged, changed or contended datasets are never trained on silently, and a dataset is never lost:
checksummed chunks, missing chunks refused, non-finite values refused or stopped at, one writer per
path, a replacement cut between its renames recovered, full disks reported with the path."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import zarr
from safetensors.torch import load_file

from hpt_kit.data.store import Dataset
from tests.faults.conftest import (
    assert_same_weights,
    hpt,
    injected,
    start,
    stop,
    wait_for_step,
    weights,
    write_recipe,
)

pytestmark = pytest.mark.slow


def chunk_files(dataset: Path, field: str) -> list[Path]:
    return sorted(p for p in (dataset / field / "c").rglob("*") if p.is_file())


def test_bytes_overwritten_inside_a_chunk_fail_its_checksum_naming_file_and_array(data, tmp_path):
    chunk = chunk_files(data, "state")[0]
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\x7f" * 16
    chunk.write_bytes(bytes(raw))
    out = hpt("pretrain", write_recipe(tmp_path / "r.toml", data), "--out", tmp_path / "run", check=False)
    assert out.returncode == 1 and f"{data}: array 'state'" in out.stderr and "damaged" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run" / "checkpoints").exists()


def test_a_deleted_chunk_is_an_error_not_zeros(data, tmp_path):
    chunk_files(data, "action")[0].unlink()
    out = hpt("pretrain", write_recipe(tmp_path / "r.toml", data), "--out", tmp_path / "run", check=False)
    assert out.returncode == 1 and f"{data}: array 'action' chunk 0/0" in out.stderr and "missing" in out.stderr


def _poke(dataset: Path, field: str, rows, value: float) -> None:
    """Write into a stored array through zarr (valid checksums): a change made after conversion."""
    array = zarr.open_group(str(dataset), mode="r+")[field]
    block = array[:]
    block[rows] = value
    array[:] = block


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_value_in_a_dataset_is_refused_naming_episode_and_step(value, data, tmp_path):
    ds = Dataset(data)
    row = int(ds.episode_starts[3]) + 4
    _poke(data, "state", row, value)
    out = hpt("pretrain", write_recipe(tmp_path / "r.toml", data), "--out", tmp_path / "run", check=False)
    assert out.returncode == 1 and "array 'state' holds a non-finite value at episode 3, step 4" in out.stderr


@pytest.mark.parametrize("allowed", [0, 3])
def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(allowed, data, tmp_path):
    """Streamed data is not loaded whole, so NaN reaches the loss: the step is not applied and the
    run stops (after ``skip_nonfinite`` skipped steps), naming step and embodiment."""
    extra = f"stream = true\nstream_memory_mb = 1\nskip_nonfinite = {allowed}"
    recipe, run = write_recipe(tmp_path / "r.toml", data, extra=extra), tmp_path / "run"
    proc = start("pretrain", recipe, "--out", run)
    wait_for_step(proc, run, 25)
    stop(proc, signal.SIGKILL)
    _poke(data, "action", slice(None), float("nan"))
    out = hpt("pretrain", recipe, "--out", run, "--resume", check=False)
    assert out.returncode == 1 and f"step {21 + allowed}: non-finite gradient norm nan (loss nan)" in out.stderr, out.stderr
    assert "on embodiment mujoco-arm3" in out.stderr and "step_00000020" in out.stderr
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("event") == "skipped" for r in records) == allowed + 1
    for folder in (run / "checkpoints").glob("step_*"):
        assert all(torch.isfinite(t).all() for t in load_file(str(folder / "model.safetensors")).values())
    assert (run / "checkpoints" / "latest").resolve().name == "step_00000020"


def test_two_conversions_to_one_path_one_wins_the_other_says_why(tmp_path):
    path = tmp_path / "arm3.zarr"
    args = ["convert", "mujoco-arm3", "--episodes", 40, "--out", path]
    procs = [start(*args) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    err = next(e for code, e in results if code == 1)
    assert f"dataset {path} is in use by pid" in err or "already exists" in err
    assert Dataset(path).num_episodes == 40
    assert [p.name for p in tmp_path.iterdir()] == ["arm3.zarr"]


def test_a_replacement_killed_between_its_renames_is_recovered(data, tmp_path):
    out = injected("kill-between-renames", "convert", "mujoco-arm3", "--episodes", 5, "--out", data, "--overwrite")
    assert out.returncode == -signal.SIGKILL
    assert not data.exists() and list(data.parent.glob(".mujoco-arm3.zarr.old-*"))  # the state a crash leaves
    run = hpt("pretrain", write_recipe(tmp_path / "r.toml", data, steps=10), "--out", tmp_path / "run")
    assert "restored from .mujoco-arm3.zarr.tmp-" in run.stderr
    assert Dataset(data).num_episodes == 5  # the complete new dataset, not a re-conversion
    assert sorted(p.name for p in data.parent.iterdir()) == ["mujoco-arm3.zarr"]


def test_an_overwrite_killed_mid_write_leaves_the_old_dataset(data):
    proc = start("convert", "mujoco-arm3", "--episodes", 3000, "--out", data, "--overwrite")
    deadline = time.monotonic() + 120
    while not list(data.parent.glob(".mujoco-arm3.zarr.tmp-*")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    stop(proc, signal.SIGKILL)
    assert Dataset(data).num_episodes == 12
    hpt("convert", "mujoco-arm3", "--episodes", 6, "--out", data, "--overwrite")  # the leftover is cleared
    assert Dataset(data).num_episodes == 6
    assert sorted(p.name for p in data.parent.iterdir()) == ["mujoco-arm3.zarr"]


@contextmanager
def small_disk(where: Path, size: str):
    where.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}); needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_during_conversion_names_the_path_and_leaves_nothing(tmp_path):
    with small_disk(tmp_path / "disk", "24k") as disk:
        out = hpt("convert", "mujoco-arm3", "--episodes", 12, "--out", disk / "arm3.zarr", check=False)
        assert out.returncode == 1 and f"{disk / 'arm3.zarr'}: cannot write the dataset" in out.stderr, out.stderr
        assert "No space left" in out.stderr and list(disk.iterdir()) == []


def test_a_full_disk_at_a_checkpoint_names_it_and_resume_after_freeing_space_is_exact(arm3, reference, tmp_path):
    with small_disk(tmp_path / "disk", "3m") as disk:
        recipe, run = write_recipe(tmp_path / "r.toml", arm3), disk / "run"
        out = hpt("pretrain", recipe, "--out", run, check=False)
        assert out.returncode == 1 and f"{run / 'checkpoints' / 'step_00000030'}: cannot write the checkpoint" in out.stderr
        assert "No space left on device" in out.stderr and "earlier checkpoints are untouched" in out.stderr
        kept = [p.name for p in sorted((run / "checkpoints").iterdir()) if not p.name.startswith("best")]
        assert kept == ["latest", "step_00000010", "step_00000020"]
        subprocess.run(["mount", "-o", "remount,size=32m", str(disk)], check=True)
        hpt("pretrain", recipe, "--out", run, "--resume")
        assert_same_weights(weights(run), reference)
