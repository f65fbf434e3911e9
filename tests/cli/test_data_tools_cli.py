"""``hpt-kit data info|select|split|merge`` through the real command on real stores."""

import json

from hpt_kit.core.spec import ConvertRequest
from hpt_kit.data.store import Dataset, write_dataset
from tests.cli.test_end_to_end import hpt
from tests.conftest import make_toy


def test_split_select_merge_and_info(tmp_path):
    src = tmp_path / "arm.zarr"
    hpt("convert", "mujoco-arm3", "--episodes", 5, "--out", src)
    info = json.loads(hpt("data", "info", src, "--json").stdout)
    assert info["episodes"] == 5 and info["embodiment"] == "mujoco-arm3" and info["bytes_on_disk"] > 0
    assert set(info["fields"]) == {"state", "action"} and len(info["fields"]["action"]["stats"]["min"]) == 3
    table = hpt("data", "info", src).stdout
    assert "5 episodes" in table and "expert_success_rate" in table and "float32" in table

    split = json.loads(hpt("data", "split", src, tmp_path / "train.zarr", tmp_path / "val.zarr", "--fraction", 0.6, "--json").stdout)
    counts = [d["episodes"] for d in split["datasets"]]
    assert counts == [3, 2]
    merged = json.loads(hpt("data", "merge", tmp_path / "all.zarr", tmp_path / "train.zarr", tmp_path / "val.zarr", "--json").stdout)
    assert merged["episodes"] == 5 and merged["steps"] == info["steps"]
    chosen = Dataset(tmp_path / "train.zarr").notes["derived"]["sources"][0]["episodes"]
    first = Dataset(tmp_path / "all.zarr").episode(0)["state"]
    assert (first == Dataset(src).episode(chosen[0])["state"]).all()

    bad = hpt("data", "select", src, tmp_path / "x.zarr", "--episodes", "2-7", check=False)
    assert bad.returncode != 0 and "episode 7 does not exist (the dataset has 5: 0-4)" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x.zarr").exists()


def test_select_by_instruction(tmp_path):
    toy = make_toy()
    eps = list(toy.convert_dataset(ConvertRequest(episodes=4, seed=0)))
    notes = {"instructions": ["pick the red cube", "open the drawer"], "episode_instructions": [0, 1, 1, 0]}
    src = write_dataset(tmp_path / "lang.zarr", toy, eps, notes)
    out = json.loads(hpt("data", "select", src, tmp_path / "drawer.zarr", "--instruction", "Drawer", "--json").stdout)
    assert out["episodes"] == 2
    assert json.loads(hpt("data", "info", tmp_path / "drawer.zarr", "--json").stdout)["instructions"] == {"open the drawer": 2}
