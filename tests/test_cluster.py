"""``convert --address`` on a real Ray cluster started here on loopback (a head node with 2 CPUs as
separate processes, stopped at the end): a Ray worker killed in the middle of a unit stops the run
with the finished shards kept and no half shard, ``--resume`` redoes only the rest, and the dataset
equals the serial conversion's. (An interrupted driver: tests/data/test_fanout.py.)"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpt_kit.data.fanout import parts_folder
from hpt_kit.data.store import Dataset
from tests.cli.test_end_to_end import hpt
from tests.conftest import HPT_KIT, ROOT
from tests.data.test_shards import assert_same_dataset

pytest.importorskip("ray", reason="the [cluster] extra (make setup installs it)")
pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
EPISODES, UNIT = 90, 30  # three units, two at a time on the head's 2 CPUs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOKEN = secrets.token_hex(32)  # the cluster's own token: nothing read from or written to ~/.ray


@pytest.fixture(scope="module")
def cluster():
    """The head node's address; the cluster and the commands use token authentication."""
    env = _env()
    port = _free_port()
    subprocess.run(
        [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=env, check=True, capture_output=True, timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop"], env=env, capture_output=True, timeout=120)


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


def _serial(tmp_path: Path, episodes: int) -> Dataset:
    path = tmp_path / "serial.zarr"
    hpt("convert", "mujoco-arm3", "--episodes", episodes, "--seed", 5, "--out", path)
    return Dataset(path)


def _start(out: Path, cluster: str, *extra) -> subprocess.Popen:
    args = ["convert", "mujoco-arm3", "--episodes", EPISODES, "--seed", 5, "--out", out, "--address", cluster,
            "--unit-episodes", UNIT, *extra]
    return subprocess.Popen([HPT_KIT, *map(str, args)], env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _unit_in_progress(parts: Path, proc: subprocess.Popen, timeout: float = 60.0) -> tuple[Path, int]:
    """A shard being written right now and the pid of the worker writing it (its lock names it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for lock in parts.glob(".shard-*.zarr.lock"):
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                continue
            if holder.get("pid"):
                return parts / lock.name[1:].removesuffix(".lock"), int(holder["pid"])
        time.sleep(0.005)
    raise AssertionError(f"no unit was seen in progress under {parts}")


def test_a_worker_killed_mid_unit_then_resume_gives_the_serial_dataset(cluster, tmp_path):
    out = tmp_path / "arm3.zarr"
    parts = parts_folder(out)
    proc = _start(out, cluster)
    shard, pid = _unit_in_progress(parts, proc)
    os.kill(pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and not out.exists()
    assert "its Ray worker died while running it" in stderr and "--resume" in stderr and "Traceback" not in stderr, stderr
    assert not shard.exists()  # the unit cut short left no shard, only a temporary folder at most
    finished = sorted(p.name for p in parts.glob("shard-*.zarr"))
    for name in finished:
        Dataset(parts / name)  # every shard there is complete

    done = hpt("convert", "mujoco-arm3", "--episodes", EPISODES, "--seed", 5, "--out", out, "--address", cluster,
               "--unit-episodes", UNIT, "--resume", "--json", env=_env())
    assert f"Ray cluster at {cluster} (2 CPUs)" in done.stderr and f"units 3/3, episodes {EPISODES}/{EPISODES}" in done.stderr
    assert (f"{len(finished)} from before" in done.stderr) == bool(finished)
    assert not parts.exists() and json.loads(done.stdout)["episodes"] == EPISODES
    serial = _serial(tmp_path, EPISODES)
    sharded = Dataset(out)
    assert len(sharded.shards) == 3 and sharded.notes == serial.notes
    assert_same_dataset(serial, sharded)
