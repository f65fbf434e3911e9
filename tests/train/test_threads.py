"""torch's thread count for training: as set, or the cores divided by the kit training processes
running on the machine (real processes, found by their command lines)."""

import subprocess
import sys
import time

import torch

from hpt_kit.train.threads import Threads, _is_training, cores, training_processes


def test_kit_training_commands_are_told_from_other_processes():
    assert _is_training(["/venv/bin/python", "/venv/bin/hpt-kit", "pretrain", "r.toml"])
    assert _is_training(["python", "-m", "hpt_kit", "--debug", "transfer", "--embodiment", "x"])
    assert not _is_training(["/venv/bin/hpt-kit", "eval", "runs/a"])
    assert not _is_training(["python", "-m", "hpt_kit.data.reader"]) and not _is_training(["python", "train.py"])


def test_a_setting_is_used_and_the_automatic_one_shares_the_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        Threads(1)
        assert torch.get_num_threads() == 1
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "hpt-kit", "pretrain", "x.toml"])
        try:
            deadline = time.monotonic() + 10
            while training_processes() < 2 and time.monotonic() < deadline:  # this one and the other, at least
                time.sleep(0.1)
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
            auto = Threads(0)
            assert auto.auto and 1 <= torch.get_num_threads() <= max(1, cores() // 2)
        finally:
            other.kill()
            other.wait()
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert not Threads(0).auto  # torchrun's (or the user's) OMP_NUM_THREADS is left to torch
    finally:
        torch.set_num_threads(before)


def test_a_resumed_run_keeps_the_count_it_started_with(monkeypatch, tmp_path):
    from hpt_kit.train.threads import recorded_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    (tmp_path / "metrics.jsonl").write_text('{"event": "start", "threads": 1}\n{"step": 2, "loss": 0.5}\n')
    try:
        assert recorded_threads(tmp_path) == 1
        assert recorded_threads(tmp_path / "missing") is None
        Threads(0, recorded=recorded_threads(tmp_path))
        assert torch.get_num_threads() == 1
        Threads(2, recorded=1)  # a setting still wins
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
