"""End to end through the real ``hpt-kit`` command: robomimic files written from the kit's robosuite
expert, imported, trained and evaluated. The one whose env_args name Lift with its Panda and
controller rolls out in robosuite (``hpt-kit eval`` and as an ``experiment`` target); the one whose
env_args name an environment robosuite lacks is evaluated offline, saying why."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .expert_file import write_expert_demos

pytest.importorskip("hpt_kit_robosuite")
pytestmark = pytest.mark.slow

HPT_KIT = str(Path(sys.executable).with_name("hpt-kit"))


def test_imported_lift_rolls_out_in_robosuite_and_unmatched_env_args_stay_offline(tmp_path):
    env = {**os.environ, "HPT_KIT_DATA": str(tmp_path / "data")}

    def hpt(*args, code=0):
        done = subprocess.run([HPT_KIT, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == code, done.stderr[-3000:]
        return done

    write_expert_demos(tmp_path / "lift.hdf5", episodes=4)
    write_expert_demos(tmp_path / "other.hdf5", episodes=4, env_name="NutAssemblySquareX")
    hpt("import", "robomimic", "lift.hdf5", "--name", "rm-lift")
    hpt("import", "robomimic", "other.hdf5", "--name", "rm-other")

    # rm-other: a tiny run, and its evaluation offline with the reason
    hpt("transfer", "--embodiment", "rm-other", "--from-scratch", "--trunk-preset", "tiny", "--steps", 2, "--out", "other")
    offline = hpt("eval", "other", "--json")
    assert json.loads(offline.stdout)["mode"] == "offline"
    assert re.search(r"offline evaluation \(robosuite [\d.]+ has no environment 'NutAssemblySquareX'\)", offline.stderr)

    # rm-lift as an experiment target on that run's trunk: trained, then rolled out in robosuite
    (tmp_path / "exp.toml").write_text(
        '[experiment]\ntrunk = "other"\nmethods = ["frozen"]\nseeds = [0]\ndemos = [3]\nsteps = 3\n'
        'batch_size = 8\neval_episodes = 1\n\n[[experiment.targets]]\nembodiment = "rm-lift"\nepisodes = 4\n'
    )
    refused = hpt("experiment", "transfer", "exp.toml", "--set", "experiment.targets[0].embodiment=rm-other", "--out", "no", code=1)
    assert re.search(r"experiment target 'rm-other' has no simulator to evaluate it in: robosuite [\d.]+ has no environment", refused.stderr)
    hpt("experiment", "transfer", "exp.toml", "--out", "exp", "--workers", 1)
    result = json.loads((tmp_path / "exp" / "results.json").read_text())
    (run,) = result["runs"]
    assert (run["target"], run["demos"], run["method"], len(run["successes"])) == ("rm-lift", 3, "frozen", 1)

    online = hpt("eval", Path("exp") / run["run_dir"], "--episodes", 2, "--workers", 1, "--json")
    report = json.loads(online.stdout)
    assert "rm-lift: rolling out in robosuite Lift with Panda, as the robomimic file's env_args name it" in online.stderr
    assert report["embodiment"] == "rm-lift" and report["episodes"] == 2 and "mode" not in report
    assert 0.0 <= report["success_rate"] <= 1.0 and len(report["successes"]) == 2
    details = report["details"]
    assert (details["simulator"], details["env_name"], details["robots"]) == ("robosuite", "Lift", ["Panda"])
    assert details["state_keys"] == ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]
    # every episode ran in the environment until success or the cut-off (twice the longest demo)
    assert all(0 < n <= details["max_episode_steps"] for n in report["episode_lengths"])

    # the same run served: evaluation through the server (URL only) rebuilds the same environment here
    server = subprocess.Popen([HPT_KIT, "serve", str(Path("exp") / run["run_dir"]), "--port", "0"], stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        url, deadline = None, time.monotonic() + 120
        while url is None and time.monotonic() < deadline and server.poll() is None:
            match = re.search(r"on (ws://\S+) ", server.stderr.readline())
            url = match.group(1) if match else None
        assert url is not None, "the server did not start"
        remote = json.loads(hpt("eval", url, "--episodes", 2, "--json").stdout)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert remote["embodiment"] == "rm-lift" and remote["server"] == url
    assert remote["successes"] == report["successes"] and remote["episode_lengths"] == report["episode_lengths"]
