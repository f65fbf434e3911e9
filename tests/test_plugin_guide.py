"""The worked example of docs/writing-an-embodiment-plugin.md is a working plugin: taken from the
guide as written, installed with pip from its own pyproject.toml, it passes the contract, its expert
succeeds, and the guide's commands convert, train and evaluate it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib

import pytest

from hpt_kit import RolloutRequest
from hpt_kit.contract import check_embodiment, registered_embodiments
from tests.conftest import HPT_KIT, ROOT

GUIDE = ROOT / "docs" / "writing-an-embodiment-plugin.md"


def example(filename: str) -> str:
    """The fenced block after ``<!-- example: FILENAME -->`` in the guide."""
    found = re.search(rf"<!-- example: {re.escape(filename)} -->\n```\w+\n(.*?)```", GUIDE.read_text(), re.S)
    assert found, f"{GUIDE} has no example {filename}"
    return found.group(1)


@pytest.fixture
def package(tmp_path):
    folder = tmp_path / "pusher"
    folder.mkdir()
    (folder / "hpt_kit_pusher.py").write_text(example("hpt_kit_pusher.py"))
    (folder / "pyproject.toml").write_text(example("pyproject.toml"))
    return folder


def test_the_example_passes_the_contract_and_its_expert_succeeds(package):
    spec = importlib.util.spec_from_file_location("hpt_kit_pusher", package / "hpt_kit_pusher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pusher = registered_embodiments(module, "pusher")["pusher"]
    report = check_embodiment(pusher)
    assert report.episodes[0]["state"].shape[1] == 12 and pusher.action.dim == 2
    assert pusher.expert_rollout(RolloutRequest(episodes=20, seed=0)).success_rate >= 0.95
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["hpt_kit"] == {"pusher": "hpt_kit_pusher"}


@pytest.mark.slow
def test_the_guides_commands_on_the_installed_example(package, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", site, package],
        check=True, capture_output=True,
    )
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HPT_KIT_DISABLE_PLUGINS": "mujoco,metaworld,robosuite"}

    def hpt(*args):
        out = subprocess.run([HPT_KIT, *map(str, args)], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert out.returncode == 0, f"hpt-kit {' '.join(map(str, args))}: {out.stderr[-2000:]}"
        return out.stdout

    listed = json.loads(hpt("list", "--json"))
    assert [e["distribution"] for e in listed["embodiments"] if e["name"] == "pusher"] == ["hpt-kit-pusher"]
    (checked,) = json.loads(hpt("check", "pusher", "--expert", 5, "--json"))["embodiments"]
    assert checked["ok"] and checked["fields"]["state"] == [12] and checked["expert_success_rate"] >= 0.8
    converted = json.loads(hpt("convert", "pusher", "--episodes", 6, "--json"))
    assert converted["notes"]["expert_success_rate"] >= 0.95
    hpt("transfer", "--embodiment", "pusher", "--from-scratch", "--trunk-preset", "tiny", "--steps", 4, "--out", tmp_path / "run")
    result = json.loads(hpt("eval", tmp_path / "run", "--best", "--episodes", 2, "--expert", "--json"))
    assert result["embodiment"] == "pusher" and result["expert_success_rate"] == 1.0
