"""``hpt-kit report``: plots and a summary from a real (tiny) run's own files."""

import json
import subprocess

import matplotlib.image
import numpy as np
import pytest

from hpt_kit.lab.report import read_metrics, write_report
from hpt_kit.train.loop import train
from tests.conftest import HPT_KIT, ROOT
from tests.train.test_loop import _recipe, registry  # noqa: F401 - the fixture


def test_report_of_a_real_run(registry, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    train(_recipe(steps=12, log_every=2, val_every=4, checkpoint_every=4), run, registry)
    records = read_metrics(run / "metrics.jsonl")
    report = write_report(run)
    assert [p.name for p in report.plots] == ["loss.png", "lr.png", "throughput.png"]
    for plot in report.plots:
        image = matplotlib.image.imread(plot)
        assert image.shape[:2] == (418, 704) and image.std() > 0.05  # 6.4 x 3.8 in at 110 dpi, not blank
    text = report.markdown.read_text()
    losses = [r["loss"] for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]["toy"]) for r in records if "val_loss" in r]
    best = min(val, key=lambda p: p[1])
    assert "# Run `run` (pretrain)" in text and "steps: 12 of 12; latest checkpoint at step 12" in text
    assert "`checkpoints/step_00000012/checkpoint.json` (step 12)." in text  # the folder read, not the link
    row = next(line for line in text.splitlines() if line.startswith("| toy |"))
    assert f"| {np.mean(losses[-5:]):.4f} |" in row and f"{best[1]:.4f} (step {best[0]})" in row
    assert f"| {val[-1][1]:.4f} |" in row and "trained from scratch" in text

    # The command with --checkpoint: an older checkpoint described and named, paths as JSON.
    out = subprocess.run([HPT_KIT, "report", str(run), "--out", str(tmp_path / "r"), "--checkpoint", "8", "--json"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    written = json.loads(out.stdout)
    assert written["markdown"] == str(tmp_path / "r" / "report.md")
    older = (tmp_path / "r" / "report.md").read_text()
    assert "steps: 12 of 12; checkpoint at step 8 (chosen with --checkpoint 8)" in older and "latest" not in older
    assert "`checkpoints/step_00000008/checkpoint.json` (step 8)." in older
    assert write_report(run, tmp_path / "r2", "8").markdown.read_text() == older

    # push --checkpoint up to the upload (the Hub is not reached with --dry-run): the chosen folder's files.
    hpt = subprocess.run([HPT_KIT, "push", str(run), "someone/model", "--checkpoint", "4", "--dry-run", str(tmp_path / "up")],
                         capture_output=True, text=True, cwd=ROOT)
    assert hpt.returncode == 0, hpt.stderr
    assert json.loads((tmp_path / "up" / "checkpoint.json").read_text())["step"] == 4
    assert (tmp_path / "up" / "model.safetensors").read_bytes() == (run / "checkpoints" / "step_00000004" / "model.safetensors").read_bytes()


def test_a_torn_last_line_is_left_out_and_a_missing_run_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "val_loss": {"a": 1.0}}\n{"step": 2, "lo')
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "val_loss": {"a": 1.0}}]
    with pytest.raises(FileNotFoundError, match="nowhere/metrics.jsonl: no metrics"):
        write_report(tmp_path / "nowhere")
    out = subprocess.run([HPT_KIT, "report", str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "no metrics" in out.stderr and "Traceback" not in out.stderr
