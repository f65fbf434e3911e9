"""The user's deployment path with the real commands: ``hpt-kit serve`` in one process, ``hpt-kit eval
--server`` driving a Meta-World rollout against it from another, with the same result as the
in-process policy; a token; a clean stop on SIGTERM."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import HPT_KIT, ROOT

pytestmark = pytest.mark.slow


def hpt(*args, env):
    out = subprocess.run([HPT_KIT, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, f"hpt-kit {' '.join(map(str, args))}: {out.stderr}"
    return out


def start_server(*args, env) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([HPT_KIT, "serve", *map(str, args)], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        match = re.search(r"on (ws://\S+) ", line)
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the server did not start: {''.join(seen)}")


def test_serve_and_eval_through_it_give_the_in_process_result_and_sigterm_stops_it(tmp_path):
    env = {**os.environ, "HPT_KIT_DATA": str(tmp_path / "datasets")}
    recipe = tmp_path / "reach.toml"
    recipe.write_text(
        (ROOT / "recipes" / "smoke.toml").read_text().replace('"mujoco-arm3"', '"metaworld-reach-v3"').replace("episodes = 12", "episodes = 8")
    )
    run = tmp_path / "run"
    hpt("pretrain", recipe, "--out", run, env=env)
    local = json.loads(hpt("eval", run, "--episodes", 3, "--workers", 1, "--json", env=env).stdout)  # serial, as through a server

    served_env = {**env, "HPT_KIT_TOKEN": "robot-fleet-1"}
    server, url = start_server(run, "--port", 0, env=served_env)
    try:
        remote = json.loads(hpt("eval", run, "--server", url, "--episodes", 3, "--json", env=served_env).stdout)
        denied = subprocess.run(
            [HPT_KIT, "eval", url, "--episodes", "1"], capture_output=True, text=True, env={**env, "HPT_KIT_TOKEN": "wrong"}, cwd=ROOT
        )
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    assert code == 0 and "Traceback" not in server.stderr.read()
    assert remote["server"] == url and remote["embodiment"] == "metaworld-reach-v3"
    assert remote["successes"] == local["successes"] and remote["success_rate"] == local["success_rate"]
    assert remote["mean_return"] == pytest.approx(local["mean_return"], rel=1e-4)
    assert denied.returncode != 0 and "401" in denied.stderr
