"""An experiment's OUT folder moved elsewhere still resumes and reports: results.json records the paths
inside OUT relative to it, a run's trunk is recognised at its new place by its sha256, a finished
run's metrics.jsonl is left as it was, and an unchanged run is not evaluated again (its episodes are
read from the run's evaluations.json) until an evaluation setting changes. A reused trunk whose
latest checkpoint is damaged is refused with the message every command that reads a run gives."""

import json
import os
import shutil
import subprocess

import pytest

from hpt_kit.train.loop import train
from hpt_kit.weights.checkpoint import CheckpointError, resolve_checkpoint
from tests.conftest import HPT_KIT, ROOT
from tests.lab.conftest import write_experiment
from tests.train.test_loop import _recipe, registry  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

RUN = "runs/mujoco-arm4/K4/frozen-seed0"


def _experiment(spec, out, *extra):
    run = subprocess.run([HPT_KIT, *map(str, ("experiment", "transfer", spec, "--out", out, "--workers", 1, *extra))],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), " ".join(run.stderr.split())  # lines as wrapped, joined


def test_a_moved_experiment_resumes_reports_and_reuses_its_evaluations(tmp_path):
    (tmp_path / "pre.toml").write_text((ROOT / "recipes" / "smoke.toml").read_text().replace("steps = 40", "steps = 4")
                                       .replace("warmup_steps = 5", "warmup_steps = 1"))
    spec = write_experiment(tmp_path / "experiment.toml", pretrain=tmp_path / "pre.toml", extra='methods = ["frozen"]')
    first, said = _experiment(spec, tmp_path / "out")
    assert "not rolled out again" not in said
    assert first["pretrain"]["run_dir"] == "pretrain" and [r["run_dir"] for r in first["runs"]] == [RUN]
    assert first["runs"][0]["checkpoint_step"] == 4

    shutil.move(tmp_path / "out", tmp_path / "moved")
    out = tmp_path / "moved"
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "pretrain" / "metrics.jsonl", out / RUN / "metrics.jsonl")}
    report = subprocess.run([HPT_KIT, "experiment", "report", out], capture_output=True, text=True, cwd=ROOT)
    assert report.returncode == 0 and "| mujoco-arm4 | frozen | 4 |" in report.stdout, report.stderr

    again, said = _experiment(spec, out)  # resumed where it now lies: the trunk is the same by its sha256
    assert f"read from {out / RUN / 'evaluations.json'}, not rolled out again" in said
    assert again["runs"] == first["runs"] and again["table"] == first["table"]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in kept} == kept  # finished runs: not rewritten
    assert json.loads((out / RUN / "evaluations.json").read_text())["entries"][0]["eval"]["episodes"] == 2

    more, said = _experiment(spec, out, "--set", "experiment.eval_episodes=3")  # a changed setting: rolled out
    assert "not rolled out again" not in said and len(more["runs"][0]["successes"]) == 3
    assert more["runs"][0]["successes"][:2] == first["runs"][0]["successes"]  # the same first episodes, seeded


def test_a_reused_trunk_whose_latest_is_damaged_is_refused_as_the_commands_refuse_it(registry, tmp_path):  # noqa: F811
    train(_recipe(steps=4, checkpoint_every=2), tmp_path / "pre", registry)
    weights = tmp_path / "pre" / "checkpoints" / "step_00000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError) as refused:
        resolve_checkpoint(tmp_path / "pre")  # what info, eval, report... say
    spec = write_experiment(tmp_path / "experiment.toml", extra=f'trunk = "{tmp_path / "pre"}"\nmethods = ["frozen"]')
    run = subprocess.run([HPT_KIT, *map(str, ("experiment", "transfer", spec, "--out", tmp_path / "out"))],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1 and " ".join(run.stderr.split()) == " ".join(f"error: {refused.value}".split()), run.stderr
    assert "truncated" in run.stderr and not (tmp_path / "out").exists()  # nothing trained from an older checkpoint
