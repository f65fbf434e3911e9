"""README's "Bring your own data", walked end to end through the real ``hpt-kit`` command with no
network: a LeRobot v3.0 recording of a position-controlled arm (two cameras of different sizes, task
instructions, joint names) -> import -> transfer, frozen trunk and from scratch -> eval with its
baselines -> replay plot -> serve -> a robot loop through ``hpt_kit.client`` sending camera frames
and an instruction -> every served action within the advertised bounds."""

import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from hpt_kit.cli.eval_offline import print_offline
from hpt_kit.data.store import Dataset
from hpt_kit.data.tools import dataset_info
from hpt_kit.images import fit_frames
from tests.cli.test_end_to_end import hpt
from tests.cli.test_import_end_to_end import _fixture_writer
from tests.conftest import HPT_KIT, ROOT

pytestmark = pytest.mark.slow

JOINTS = [f"joint_{i}" for i in range(4)]


def test_bring_your_own_data_import_transfer_eval_serve_and_a_robot_loop(tmp_path, data_root, capsys):
    write_lerobot = _fixture_writer("plugins/lerobot/tests/lerobot_fixtures.py", "write_lerobot")
    source = write_lerobot(tmp_path / "so101", episodes=9, steps=10, frame_size=(24, 32), cameras=("front", "wrist"),
                           camera_sizes={"wrist": (16, 16)}, state_dim=4, action_dim=4, follow=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}

    # import: cameras of different sizes, stored at the smaller one's size, the other fitted with its aspect kept
    imported = json.loads(hpt("import", "lerobot", source, "--name", "so101", "--json", env=env).stdout)
    assert imported["views"] == ["front", "wrist"] and imported["episodes"] == 9
    assert imported["notes"]["import"]["frames"] == {
        "height": 16, "width": 16, "fit": "pad", "method": "hpt_kit.images.fit_frames", "source": {"front": [24, 32], "wrist": [16, 16]}
    }
    spec = Dataset(data_root / "so101.zarr").spec
    assert spec.observation.state_names == tuple(JOINTS) == spec.action.names  # LeRobot's names, kept
    fields = dataset_info(Dataset(data_root / "so101.zarr"), stats=False)["fields"]  # as `data info` shows them
    assert fields["action"]["names"] == JOINTS and fields["image"]["names"] == ["front", "wrist"]

    # transfer from scratch (the baseline), then onto a frozen trunk. The trunk stands in for a
    # pre-trained one (README: hf://...): the scratch run's own, so that nothing is downloaded. The
    # imported image stem starts from random weights by default: no ImageNet download either.
    scratch, frozen = tmp_path / "scratch", tmp_path / "frozen"
    hpt("transfer", "--embodiment", "so101", "--from-scratch", "--trunk-preset", "tiny", "--steps", 6,
        "--val-episodes", "1,4,7", "--out", scratch, env=env)
    hpt("transfer", "--embodiment", "so101", "--trunk", scratch, "--freeze-trunk", "--steps", 6, "--out", frozen, env=env)

    # eval: the held-out episodes named, the policy beside both baselines on the same windows
    report = json.loads(hpt("eval", frozen, "--best", "--json", env=env).stdout)
    assert report["mode"] == "offline" and report["held_out_episodes"] == len(report["held_out"]) == 3  # 0.2 of 9, at least 3
    assert report["dimensions"] == JOINTS and report["windows"] == 3 * 9  # every step after each episode's first
    hold, repeat = report["baselines"]["hold_position"], report["baselines"]["repeat_previous"]
    assert hold["applicable"] and "same names" in hold["reason"] and repeat["applicable"]
    # The arm steps by 1 in every joint and the action is the next state (the last step's its own): both
    # baselines miss by 1 at 8 of the 9 windows of an episode and by 0 at its last.
    assert hold["first_action_mae"] == pytest.approx([8 / 9] * 4) and repeat["first_action_mae"] == pytest.approx([8 / 9] * 4)
    assert len(report["first_action_mae"]) == 4 and report["ci95"] is not None and len(hold["policy_minus_baseline"]) == 3
    print_offline(report)  # the table eval prints without --json, from the same report
    table = capsys.readouterr().out
    assert "hold position" in table and "repeat previous" in table and "joint_3" in table and "policy - hold position" in table
    assert re.search(r"3 held-out episodes \[\d, \d, \d\]", table)
    plot = tmp_path / "replay.png"  # an episode the scratch run held out by name (--val-episodes)
    replayed = json.loads(hpt("eval", scratch, "--replay", 4, "--plot", plot, "--json", env=env).stdout)
    assert replayed["held_out"] and plot.stat().st_size > 10_000 and replayed["dimensions"] == JOINTS

    # serve, two steps of each chunk, and drive it as a robot would: frames of both cameras and an instruction
    server = subprocess.Popen([HPT_KIT, "serve", frozen, "--best", "--port", "0", "--execute-steps", "so101=2", "--token", "s3cret"],
                              stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        url = _served_url(server)
        from hpt_kit.client import PolicyClient, ServerError

        with pytest.raises(ServerError, match="HPT_KIT_TOKEN"):
            PolicyClient(url, token="")
        with PolicyClient(url, "so101", token="s3cret") as robot:
            meta = robot.metadata["embodiments"]["so101"]
            assert meta["action_names"] == JOINTS and meta["cameras"] == ["front", "wrist"] and meta["execute_steps"] == 2
            fields = meta["observation"]
            assert set(fields) == {"state", "image", "instruction"} and fields["image"]["shape"] == [2, 16, 16, 3]
            low, high = np.asarray(meta["action_low"]), np.asarray(meta["action_high"])
            _, height, width, _ = fields["image"]["shape"]
            cameras = {"front": (24, 32, 3), "wrist": (16, 16, 3)}  # each camera at its own size, fitted as at import
            rng = np.random.default_rng(0)
            robot.reset()
            actions = []
            for t in range(8):
                state = np.full(4, 100.0 + t, np.float32)
                frames = np.stack([fit_frames(rng.integers(0, 256, size=cameras[c], dtype=np.uint8), height, width, "pad")
                                   for c in meta["cameras"]])
                actions.append(robot.act({"state": state, "image": frames, "instruction": "pick up the red cube"}))
            stats = robot.call("stats")
        actions = np.stack(actions)
        assert actions.shape == (8, 4) and np.all(actions >= low - 1e-4) and np.all(actions <= high + 1e-4)
        assert stats["actions"] == 8 and stats["predictions"] == 4 and "clipped_actions" in stats
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    assert code == 0, server.stderr.read()


def _served_url(server: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stderr.readline()  # the console: progress and notices on stderr
        found = re.search(r"ws://[\d.]+:\d+", line)
        if found:
            return found.group(0)
        if server.poll() is not None:
            break
    raise AssertionError(f"the server did not start: {server.stderr.read()}")
