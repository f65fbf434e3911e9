"""``experiment transfer --run-workers``: after pre-training, every (target, K, method, seed) run is a
work unit in its own process; the results equal the sequential experiment's run by run."""

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import HPT_KIT, ROOT
from tests.lab.conftest import write_experiment

pytestmark = pytest.mark.slow


def _experiment(spec, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the sequential runs' threads: the fanned-out ones get 1 each here
    run = subprocess.run([HPT_KIT, *map(str, ("experiment", "transfer", spec, "--out", out, "--workers", 1, *extra))],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), run.stderr


def test_fanned_out_runs_give_the_sequential_results(tmp_path):
    spec = write_experiment(tmp_path / "experiment.toml")
    sequential, _ = _experiment(spec, tmp_path / "one")
    shutil.copytree(tmp_path / "one" / "pretrain", tmp_path / "two" / "pretrain", symlinks=True)  # the same trunk, not trained again
    fanned, stderr = _experiment(spec, tmp_path / "two", "--run-workers", 2)
    assert "3 runs on 2 local processes, 1 thread(s) each" in stderr
    keys = ("target", "demos", "method", "seed", "steps", "successes", "success_rate", "final_val_loss", "val_curve")
    assert [{k: r[k] for k in keys} for r in fanned["runs"]] == [{k: r[k] for k in keys} for r in sequential["runs"]]
    assert fanned["table"] == sequential["table"]
    assert all(r["final_val_loss"] and r["val_curve"] for r in sequential["runs"])  # trained and validated: not empty rows
    assert len({r["final_val_loss"] for r in sequential["runs"]}) == 3
