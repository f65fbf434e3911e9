"""``hpt-kit data push``: the exact folder uploaded (the store itself plus a dataset card), and that
folder, laid out as a cached Hub dataset, read back offline as ``hf://datasets/OWNER/NAME``."""

import json

import numpy as np
import yaml

from hpt_kit.data.convert import convert
from hpt_kit.data.store import Dataset
from tests.conftest import make_image_toy
from tests.weights.test_hub import cache_repo, hpt, offline  # noqa: F401 - the fixture


def test_push_prepares_the_store_and_a_card_that_reads_back_from_the_hub(tmp_path, offline):  # noqa: F811
    hub, env = offline
    src = convert(make_image_toy(length=6), tmp_path / "cams.zarr", episodes=3, seed=0)
    out = tmp_path / "upload"
    printed = hpt("data", "push", src, "hf://datasets/alice/toy-cams", "--dry-run", out, env=env).stdout
    assert "nothing uploaded" in printed
    assert (out / "README.md").is_file() and (out / "zarr.json").is_file()
    pushed, original = Dataset(out), Dataset(src)
    assert pushed.num_episodes == 3 and pushed.spec.to_dict() == original.spec.to_dict()
    np.testing.assert_array_equal(pushed.episode(2)["image"], original.episode(2)["image"])

    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["task_categories"] == ["robotics"] and "toy-cam" in header["tags"]
    assert "| image | (1, 32, 32, 3) | uint8 |" in card and "- cameras: top (32x32)" in card
    assert "3 episodes, 18 steps" in card and "huggingface-cli download --repo-type dataset alice/toy-cams" in card

    cache_repo(hub, "alice/toy-cams", out, kind="datasets")
    info = json.loads(hpt("data", "info", "hf://datasets/alice/toy-cams", "--json", env=env).stdout)
    assert info["episodes"] == 3 and info["embodiment"] == "toy-cam"

    bad = hpt("data", "push", src, "hf://alice/toy-cams@v1", "--dry-run", tmp_path / "x", env=env, check=False)
    assert bad.returncode != 0 and "expected hf://datasets/OWNER/NAME or OWNER/NAME" in bad.stderr
