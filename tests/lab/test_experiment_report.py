"""`hpt-kit experiment report`: a finished experiment analysed again from its recorded episodes; the
published run's seed-level intervals, as docs/experiment/README.md states them."""

import json
import subprocess

import pytest

from tests.conftest import HPT_KIT, ROOT

pytestmark = pytest.mark.slow


def report(*args):
    return subprocess.run([HPT_KIT, "experiment", "report", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_the_published_run_with_both_intervals():
    run = report(ROOT / "docs" / "experiment")
    assert run.returncode == 0, run.stderr
    assert ("with 10 demonstrations, finetune vs scratch: +24.0 points (95% intervals: paired episodes +16.2 to +31.3, "
            "seed bootstrap +6.7 to +39.3), resolved: finetune is better than scratch (the stricter interval, seed bootstrap, "
            "excludes 0)") in run.stdout
    assert ("with 10 demonstrations, frozen vs scratch: +24.0 points (95% intervals: paired episodes +14.7 to +32.7, "
            "seed bootstrap -0.7 to +42.7), not resolved") in run.stdout
    again = json.loads(report(ROOT / "docs" / "experiment" / "results.json", "--json").stdout)
    published = json.loads((ROOT / "docs" / "experiment" / "results.json").read_text())
    assert again["runs"] == published["runs"]  # nothing re-run: the recorded episodes, analysed again
    assert [c["ci95"] for c in again["comparisons"]] == [c["ci95"] for c in published["comparisons"]]
    left = report(ROOT / "docs" / "experiment" / "leave-out")
    assert "| +10.0 (+3.5 to +16.3) | +1.3 to +19.3 | +0.0056 | helped (seed bootstrap) |" in left.stdout


def test_a_file_that_is_not_an_experiments_results_is_named_in_one_line(tmp_path):
    (tmp_path / "other.json").write_text('{"runs": []}')
    run = report(tmp_path / "other.json")
    assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1
    assert f"{tmp_path / 'other.json'}: not an experiment's results (no 'settings' key)" in run.stderr
