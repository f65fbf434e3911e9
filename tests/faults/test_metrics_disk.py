"""A disk that fills up while ``metrics.jsonl`` is written: the run stops with the error naming the
file, and closing the file afterwards (its buffer still holding the line) does not replace it."""

from __future__ import annotations

import json

import pytest

from tests.faults.conftest import hpt, write_recipe
from tests.faults.test_data_faults import small_disk

pytestmark = pytest.mark.slow


def test_a_full_disk_while_metrics_are_written_names_the_file(arm3, tmp_path):
    # 12 KiB: recipe.toml and metrics.jsonl get a page each, the lock a third; no checkpoint falls
    # due before the end, so metrics.jsonl is what fills the disk (at about step 24 of 40).
    with small_disk(tmp_path / "disk", "12k") as disk:
        run = disk / "run"
        recipe = write_recipe(tmp_path / "r.toml", arm3, steps=40)
        out = hpt("pretrain", recipe, "--out", run, "--set", "train.log_every=1", "--set", "train.checkpoint_every=1000",
                  "--set", "train.val_every=1000", check=False)
        assert out.returncode == 1, out.stderr
        last = out.stderr.strip().splitlines()[-1]
        assert last == f"error: {run / 'metrics.jsonl'}: cannot write it (No space left on device)", out.stderr
        assert "OSError" not in out.stderr and "Traceback" not in out.stderr
        assert not (run / "checkpoints").exists()  # the run stopped there: nothing saved after the failed write
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert 5 < len(lines) < 40 and all(json.loads(line) for line in lines[:-1])  # only the last line may be torn
