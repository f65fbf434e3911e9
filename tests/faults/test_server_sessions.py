"""Many robot names on one server (the real ``hpt-kit serve``, over loopback): live sessions are capped
per connection and per server, a new robot beyond a cap is refused with a named error, and the robots
already served keep acting."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from websockets.sync.client import connect

from hpt_kit.core.wire import decode, encode
from tests.conftest import HPT_KIT, ROOT

pytestmark = pytest.mark.slow


def call(ws, **message) -> dict:
    ws.send(encode(message))
    return decode(ws.recv(timeout=30))


def observation(metadata: dict, embodiment: str) -> dict:
    fields = metadata["embodiments"][embodiment]["observation"]
    return {name: ("" if f["dtype"] == "str" else np.zeros(f["shape"], dtype=f["dtype"])) for name, f in fields.items()}


def test_new_robots_beyond_the_caps_are_refused_and_the_others_keep_acting(trained):
    server = subprocess.Popen(
        [HPT_KIT, "serve", trained, "--port", "0", "--max-robots", "40", "--max-robots-per-connection", "32"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while not (lines and lines[-1].startswith("serving")) and time.monotonic() < deadline:
            lines.append(server.stderr.readline())
            assert server.poll() is None, "".join(lines)
        url = lines[-1].split(" on ")[1].split(" ")[0]
        with connect(url) as a, connect(url) as b:
            meta = call(a, op="metadata", id=0)["result"]
            obs = observation(meta, "mujoco-arm3")
            replies = [call(a, op="reset", id=i, robot=f"a{i}", embodiment="mujoco-arm3") for i in range(100)]
            assert [r["ok"] for r in replies] == [True] * 32 + [False] * 68
            assert replies[32]["error"] == (
                "robot: 'a32' refused: this connection already drives 32 robots "
                "(max_robots_per_connection 32, hpt-kit serve --max-robots-per-connection)"
            )
            replies = [call(b, op="reset", id=i, robot=f"b{i}", embodiment="mujoco-arm3") for i in range(20)]
            assert [r["ok"] for r in replies] == [True] * 8 + [False] * 12
            assert replies[8]["error"] == (
                "robot: 'b8' refused: the server already serves 40 robots (max_robots 40, hpt-kit serve --max-robots); "
                "robots silent for 300 s are dropped"
            )
            assert call(a, op="reset", id=1, robot="a0", embodiment="mujoco-arm3")["ok"]  # a robot already served may reset
            for robot, ws in (("a0", a), ("a31", a), ("b7", b)):  # the robots already served keep acting
                reply = call(ws, op="act", id=2, robot=robot, observation=obs)
                assert reply["ok"], reply
                assert np.isfinite(reply["result"]["action"]).all()
            refused = call(a, op="act", id=3, robot="a50", observation=obs)
            assert not refused["ok"] and "unknown 'a50'" in refused["error"]
            stats = call(a, op="stats", id=4)["result"]
            assert stats["sessions"] == 40 and stats["refused_robots"] == 68 + 12
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode in (0, 143, -15)
