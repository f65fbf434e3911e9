"""The path lock: one holder at a time, the holder named, nothing left behind, a dead holder's file
never blocking."""

import os
import subprocess
import sys

import pytest

from hpt_kit.core.lock import LockError, PathLock, dataset_lock, run_lock


def test_a_second_holder_is_refused_naming_the_first_and_the_file_goes_with_the_lock(tmp_path):
    with run_lock(tmp_path / "run") as held:
        assert (tmp_path / "run" / ".lock").is_file()
        with pytest.raises(LockError, match=rf"run directory {tmp_path / 'run'} is in use by pid {os.getpid()} on "):
            run_lock(tmp_path / "run").acquire()
        assert held.acquire() is held  # the holder itself may ask again
    assert list((tmp_path / "run").iterdir()) == []
    with dataset_lock(tmp_path / "d.zarr"):
        assert (tmp_path / ".d.zarr.lock").is_file()


def test_waiting_gives_up_after_the_time_given(tmp_path):
    with PathLock(tmp_path / "x.lock", "thing"):
        with pytest.raises(LockError, match="thing is in use"):
            PathLock(tmp_path / "x.lock", "thing", wait=0.3).acquire()


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    code = (
        "import os, signal; from hpt_kit.core.lock import run_lock; "
        f"run_lock({str(tmp_path / 'run')!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run([sys.executable, "-c", code])
    assert "pid" in (tmp_path / "run" / ".lock").read_text()  # its holder's record remains
    with run_lock(tmp_path / "run"):
        assert str(os.getpid()) in (tmp_path / "run" / ".lock").read_text()
