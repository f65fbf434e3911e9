"""``hpt-kit convert --workers``: episode ranges as work units in local processes, one shard each; the
finished dataset equals the serial command's; an interrupted run resumes its unfinished units only;
a second writer is refused; a sharded dataset merges into one store."""

import json
import os

import pytest

from hpt_kit.core.lock import dataset_lock
from hpt_kit.data.fanout import convert_sharded, parts_folder
from hpt_kit.data.shards import shard_name
from hpt_kit.data.store import Dataset, DatasetError
from tests.cli.test_end_to_end import hpt
from tests.data.test_shards import assert_same_dataset

SERIAL = {}


def serial_arm3(tmp_path_factory, episodes=10, seed=3):
    """The serial command's dataset, made once for the module."""
    if (episodes, seed) not in SERIAL:
        path = tmp_path_factory.mktemp("serial") / "arm3.zarr"
        hpt("convert", "mujoco-arm3", "--episodes", episodes, "--seed", seed, "--out", path)
        SERIAL[episodes, seed] = path
    return Dataset(SERIAL[episodes, seed])


def test_parallel_convert_equals_the_serial_one(tmp_path, tmp_path_factory):
    serial = serial_arm3(tmp_path_factory)
    out = tmp_path / "arm3.zarr"
    done = hpt("convert", "mujoco-arm3", "--episodes", 10, "--seed", 3, "--out", out, "--workers", 2, "--unit-episodes", 3, "--json")
    summary = json.loads(done.stdout)
    assert summary["episodes"] == 10 and summary["notes"] == serial.notes
    assert "units 4/4, episodes 10/10" in done.stderr and "frames/s" in done.stderr and "2 local processes" in done.stderr
    sharded = Dataset(out)
    assert [s.num_episodes for s in sharded.shards] == [3, 3, 3, 1]
    assert_same_dataset(serial, sharded)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *(shard_name(i) for i in range(4))]
    assert not parts_folder(out).exists()

    merged = json.loads(hpt("data", "merge", tmp_path / "one.zarr", out, "--json").stdout)
    assert merged["episodes"] == 10 and merged["steps"] == serial.num_steps
    one = Dataset(tmp_path / "one.zarr")
    assert not hasattr(one, "shards") and (tmp_path / "one.zarr" / "zarr.json").is_file()
    assert_same_dataset(serial, one)
    assert one.stats == serial.stats  # written whole again, in the serial order: the same sums
    back = json.loads(hpt("data", "merge", tmp_path / "again.zarr", tmp_path / "one.zarr", "--shard-episodes", 4, "--json").stdout)
    again = Dataset(tmp_path / "again.zarr")
    assert back["episodes"] == 10 and [s.num_episodes for s in again.shards] == [4, 4, 2]
    assert_same_dataset(serial, again)
    assert again.notes == serial.notes and again.attrs["provenance"]["sources"][0]["path"] == str(tmp_path / "one.zarr")
    info = json.loads(hpt("data", "info", out, "--json").stdout)
    assert info["episodes"] == 10 and info["steps"] == serial.num_steps
    assert info["shards"] == [str(out / shard_name(i)) for i in range(4)]


def test_an_interrupted_conversion_resumes_only_its_unfinished_units(tmp_path, tmp_path_factory):
    serial = serial_arm3(tmp_path_factory)
    out = tmp_path / "arm3.zarr"
    seen = []

    def stop_after_two(progress):
        seen.append(progress.units_done)
        if progress.units_done == 2:
            raise KeyboardInterrupt  # the driver stops here, as on Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        convert_sharded("mujoco-arm3", out, episodes=10, seed=3, unit_episodes=3, on_progress=stop_after_two)
    parts = parts_folder(out)
    assert not out.exists() and sorted(p.name for p in parts.glob("shard-*")) == [shard_name(0), shard_name(1)]
    (parts / f".{shard_name(2)}.tmp-deadbeef").mkdir()  # what a worker killed mid-unit leaves

    with pytest.raises(DatasetError, match="other settings \\(seed\\)"):
        convert_sharded("mujoco-arm3", out, episodes=10, seed=4, unit_episodes=3, resume=True)
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts.glob("shard-*")}
    resumed = []
    convert_sharded("mujoco-arm3", out, episodes=10, seed=3, unit_episodes=5, resume=True, on_progress=resumed.append)
    assert resumed[0].resumed_units == 2 and resumed[-1].units == 4  # the first run's units, not --unit-episodes 5
    assert {p: (out / p).stat().st_mtime_ns for p in mtimes} == mtimes  # finished shards were kept, not redone
    assert not parts.exists() and not any(p.name.startswith(".") for p in out.iterdir())
    assert_same_dataset(serial, Dataset(out))


def test_a_second_writer_is_refused(tmp_path):
    out = tmp_path / "arm3.zarr"
    with dataset_lock(out):
        refused = hpt("convert", "mujoco-arm3", "--episodes", 4, "--out", out, "--workers", 2, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"dataset {out} is in use by pid {os.getpid()}" in refused.stderr
    assert not out.exists() and not parts_folder(out).exists()


def test_a_killed_driver_leaves_finished_shards_and_its_workers_end(tmp_path, tmp_path_factory):
    """The command SIGKILLed while its pool works: its workers (children of the fork server, not of
    the command) end within seconds, the finished shards stay, and --resume does the rest."""
    import signal
    import subprocess
    import time

    from tests.conftest import HPT_KIT, ROOT
    from tests.test_cluster import _unit_in_progress

    out = tmp_path / "arm3.zarr"
    parts = parts_folder(out)
    args = ["convert", "mujoco-arm3", "--episodes", 90, "--seed", 3, "--out", out, "--workers", 2, "--unit-episodes", 15]
    proc = subprocess.Popen([HPT_KIT, *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(parts.glob("shard-*.zarr")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    _, worker = _unit_in_progress(parts, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{worker}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{worker}"), "a worker outlived its command"
    assert not out.exists() and list(parts.glob("shard-*.zarr"))
    resumed = []
    convert_sharded("mujoco-arm3", out, episodes=90, seed=3, resume=True, on_progress=resumed.append)
    assert resumed[0].resumed_units >= 1 and resumed[-1].units == 6
    assert_same_dataset(serial_arm3(tmp_path_factory, 90), Dataset(out))
