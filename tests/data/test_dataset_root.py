"""The dataset root: $HPT_KIT_DATA, else the checkout's data/ when run at the kit checkout's root
(where `make demo` writes, so the tour finds the same datasets), else ~/.cache/hpt-kit/datasets."""

from pathlib import Path

from hpt_kit.data.convert import dataset_root, default_dataset_path
from tests.conftest import ROOT


def test_the_checkout_uses_its_data_folder_elsewhere_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HPT_KIT_DATA")
    monkeypatch.chdir(ROOT)
    assert dataset_root() == ROOT / "data" and default_dataset_path("arm") == ROOT / "data" / "arm.zarr"
    monkeypatch.chdir(tmp_path)
    assert dataset_root() == Path.home() / ".cache" / "hpt-kit" / "datasets"
    monkeypatch.setenv("HPT_KIT_DATA", str(tmp_path / "mine"))
    monkeypatch.chdir(ROOT)
    assert dataset_root() == tmp_path / "mine"  # the variable always wins
