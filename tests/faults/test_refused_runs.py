"""What a refused command leaves behind: a run refused before training leaves no ``--out`` folder
(nor the parents it would have made), and the refusal to replace a dataset names the real option."""

from __future__ import annotations

import pytest

from tests.faults.conftest import hpt, write_recipe

pytestmark = pytest.mark.slow


def test_a_run_refused_before_training_leaves_no_out_folder(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "missing.zarr")
    out = hpt("pretrain", recipe, "--out", tmp_path / "new" / "runs" / "run", check=False)
    assert out.returncode == 1 and f"dataset {tmp_path / 'missing.zarr'} does not exist (convert = false)" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]


def test_an_existing_dataset_is_refused_naming_the_overwrite_option(arm3, tmp_path):
    out = hpt("data", "select", arm3, tmp_path / "first.zarr", "--episodes", "0,1")
    again = hpt("data", "select", arm3, tmp_path / "first.zarr", "--episodes", "0,1", check=False)
    assert again.returncode == 1, (out.stdout, again.stderr)
    assert f"{tmp_path / 'first.zarr'} already exists; pass --overwrite to replace it" in again.stderr
