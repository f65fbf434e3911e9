"""A run whose latest checkpoint is damaged: every command that reads the run refuses it with the
checkpoint folder's own one-line error (file and reason) and says how to choose an older checkpoint;
nothing is read from it, trained on it or written from it. Only ``--resume`` falls back
(test_run_dir.py). An older checkpoint chosen explicitly is used, and the command says which."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from hpt_kit.weights.checkpoint import CheckpointError, resolve_checkpoint
from tests.conftest import HPT_KIT, ROOT
from tests.faults.conftest import hpt

pytestmark = pytest.mark.slow

LATEST = "step_00000040"


def damage(run, how: str) -> str:
    """Damage the latest checkpoint of ``run`` as ``how`` says; returns the start of the expected error."""
    folder = run / "checkpoints" / LATEST
    weights, desc = folder / "model.safetensors", folder / "checkpoint.json"
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return f"{weights}: truncated ("
    if how == "zeroed weights":
        weights.write_bytes(bytes(weights.stat().st_size))
        return f"{weights}: not a readable safetensors file (header length 0"
    if how == "invalid json":
        desc.write_text(desc.read_text()[:-30])
        return f"{desc}: not valid JSON"
    assert how == "malformed json"
    kept = {k: v for k, v in json.loads(desc.read_text()).items() if k != "trunk"}
    desc.write_text(json.dumps(kept))
    return f"{desc}: key 'trunk' is missing"


def refused(out: subprocess.CompletedProcess, problem: str, run, option: str = "--checkpoint") -> None:
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == "", out.stderr
    line = out.stderr.strip()
    assert line.count("\n") == 0 and line.startswith(f"error: {problem}"), line
    assert f"it is the latest checkpoint of {run}, refused" in line
    assert f"{option} 30 ({run / 'checkpoints' / 'step_00000030'}) or another complete step (20)" in line
    assert f"or {option} best" in line


@pytest.mark.parametrize(
    "command, how",
    [
        ("info", "truncated weights"),
        ("eval", "zeroed weights"),
        ("transfer", "invalid json"),
        ("serve", "malformed json"),
        ("export", "truncated weights"),
        ("push", "zeroed weights"),
        ("report", "invalid json"),
    ],
)
def test_a_command_that_reads_a_run_refuses_its_damaged_latest_checkpoint(command, how, run_copy, arm3, tmp_path):
    run = run_copy
    problem = damage(run, how)
    out_dir = tmp_path / "out"
    args = {
        "info": ("info", run),
        "eval": ("eval", run, "--episodes", 1, "--workers", 1, "--video", out_dir),
        "transfer": ("transfer", "--embodiment", "mujoco-arm3", "--data", arm3, "--trunk", run, "--steps", 5, "--out", out_dir),
        "serve": ("serve", run, "--port", 0),
        "export": ("export", run, out_dir),
        "push": ("push", run, "someone/model", "--dry-run", out_dir),
        "report": ("report", run, "--out", out_dir),
    }[command]
    out = subprocess.run([HPT_KIT, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    refused(out, problem, run, "--trunk-checkpoint" if command == "transfer" else "--checkpoint")
    assert not out_dir.exists()  # nothing trained, evaluated or written from the damaged run


def test_an_older_checkpoint_chosen_explicitly_is_used_and_named(run_copy, arm3, tmp_path):
    run = run_copy
    damage(run, "truncated weights")
    older = run / "checkpoints" / "step_00000030"

    info = json.loads(hpt("info", run, "--checkpoint", 30, "--json").stdout)
    assert info["path"] == str(older) and info["step"] == 30
    with pytest.raises(CheckpointError, match=r"no checkpoint at step 25 \(--checkpoint\); its steps: 20, 30, 40$"):
        resolve_checkpoint(run, "25")

    evaluated = hpt("eval", run, "--checkpoint", "30", "--episodes", 1, "--workers", 1, "--json")
    assert f"evaluating checkpoint {older} (step 30)" in evaluated.stderr
    assert json.loads(evaluated.stdout)["step"] == 30

    hpt("transfer", "--embodiment", "mujoco-arm3", "--data", arm3, "--trunk", run, "--trunk-checkpoint", 30,
        "--steps", 2, "--out", tmp_path / "t")
    desc = json.loads((tmp_path / "t" / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert desc["trunk_source_step"] == 30 and desc["trunk_source_path"] == str(older)

    best = (run / "checkpoints" / "best").resolve()
    step = json.loads((best / "checkpoint.json").read_text())["step"]
    server = subprocess.Popen([HPT_KIT, "serve", run, "--best", "--port", "0"], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while not any(line.startswith("serving") for line in lines) and time.monotonic() < deadline:
            lines.append(server.stderr.readline())
            assert server.poll() is None, "".join(lines)
        assert f"checkpoint {best} (step {step}): mujoco-arm3\n" in lines, lines
    finally:
        server.terminate()
        server.wait(timeout=30)

