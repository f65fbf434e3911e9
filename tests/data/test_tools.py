"""Dataset tools on real zarr stores: info, choosing episodes, subsets and merges through the atomic writer."""

import dataclasses

import numpy as np
import pytest

from hpt_kit.core.spec import ConvertRequest
from hpt_kit.data.convert import convert
from hpt_kit.data.store import Dataset, DatasetError, write_dataset
from hpt_kit.data.tools import choose_episodes, dataset_info, merge_datasets, parse_episode_list, write_subset
from tests.conftest import make_toy

TEXTS = ["push the block", "open the drawer", "push the button"]


def toy_with_instructions(tmp_path, toy, episodes=6):
    """The toy's episodes with the per-episode instruction notes a language conversion writes."""
    eps = list(toy.convert_dataset(ConvertRequest(episodes=episodes, seed=1)))
    index = [i % 3 for i in range(episodes)]
    notes = {"instructions": TEXTS, "episode_instructions": index, "seed": 1}
    return Dataset(write_dataset(tmp_path / "lang.zarr", toy, eps, notes)), eps


def test_info_counts_fields_statistics_and_size(tmp_path, toy):
    ds, eps = toy_with_instructions(tmp_path, toy)
    info = dataset_info(ds)
    lengths = [len(e["action"]) for e in eps]
    assert info["episodes"] == 6 and info["steps"] == sum(lengths) and info["embodiment"] == "toy"
    assert info["episode_length"] == {"min": min(lengths), "mean": np.mean(lengths), "max": max(lengths)}
    assert info["fields"]["state"]["shape"] == [3] and info["fields"]["action"]["dtype"] == "float32"
    states = np.concatenate([e["state"] for e in eps]).astype(np.float64)
    np.testing.assert_allclose(info["fields"]["state"]["stats"]["mean"], states.mean(0), atol=1e-6)
    np.testing.assert_allclose(info["fields"]["state"]["stats"]["std"], states.std(0), atol=1e-5)
    np.testing.assert_allclose(info["fields"]["state"]["stats"]["max"], states.max(0))
    assert info["instructions"] == {"push the block": 2, "open the drawer": 2, "push the button": 2}
    on_disk = sum(f.stat().st_size for f in ds.path.rglob("*") if f.is_file())
    assert info["bytes_on_disk"] == on_disk > 0 and info["notes"]["seed"] == 1


def test_choosing_episodes(tmp_path, toy):
    ds, _ = toy_with_instructions(tmp_path, toy)
    assert parse_episode_list("4, 0,2-3,3", 6) == [0, 2, 3, 4]
    with pytest.raises(ValueError, match="episode 6 does not exist"):
        parse_episode_list("5-6", 6)
    with pytest.raises(ValueError, match="not an index or a range"):
        parse_episode_list("a", 6)
    assert choose_episodes(ds, instruction="PUSH the") == [0, 2, 3, 5]
    drawn = choose_episodes(ds, fraction=0.5, seed=3)
    assert len(drawn) == 3 and drawn == sorted(drawn) and drawn == choose_episodes(ds, fraction=0.5, seed=3)
    with pytest.raises(ValueError, match="one of --episodes, --fraction or --instruction"):
        choose_episodes(ds, episodes="0", fraction=0.5)
    with pytest.raises(ValueError, match="the instructions are 'push the block'"):
        choose_episodes(ds, instruction="fly")


def test_subset_keeps_the_episodes_and_reindexes_instructions(tmp_path, toy):
    ds, eps = toy_with_instructions(tmp_path, toy)
    sub = Dataset(write_subset(ds, [1, 4, 5], tmp_path / "sub.zarr", "select"))
    assert sub.num_episodes == 3
    for j, i in enumerate([1, 4, 5]):
        np.testing.assert_array_equal(sub.episode(j)["state"], eps[i]["state"])
    assert [sub.notes["instructions"][k] for k in sub.notes["episode_instructions"]] == [TEXTS[1], TEXTS[1], TEXTS[2]]
    assert sub.notes["derived"]["operation"] == "select" and sub.notes["derived"]["sources"][0]["episodes"] == [1, 4, 5]
    kept = np.concatenate([eps[i]["state"] for i in (1, 4, 5)])
    np.testing.assert_allclose(sub.stats["state"]["mean"], kept.mean(0), atol=1e-6)  # fresh statistics
    with pytest.raises(ValueError, match="not over the source"):
        write_subset(ds, [0], ds.path, "select", overwrite=True)


def test_merge_needs_equal_specs_and_writes_nothing_otherwise(tmp_path, toy):
    a = Dataset(convert(toy, tmp_path / "a.zarr", episodes=3, seed=0))
    b = Dataset(convert(toy, tmp_path / "b.zarr", episodes=2, seed=1))
    merged = Dataset(merge_datasets([a, b], tmp_path / "m.zarr"))
    assert merged.num_episodes == 5 and merged.num_steps == a.num_steps + b.num_steps
    np.testing.assert_array_equal(merged.episode(3)["action"], b.episode(0)["action"])
    assert [s["path"] for s in merged.notes["derived"]["sources"]] == [str(a.path), str(b.path)]

    other = make_toy(action_horizon=5)
    c = Dataset(convert(other, tmp_path / "c.zarr", episodes=2, seed=0))
    with pytest.raises(DatasetError, match=r"c.zarr: its spec differs .*\(head\)"):
        merge_datasets([a, c], tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists() and not list(tmp_path.glob(".bad.zarr*"))
    renamed = dataclasses.replace(toy, name="toy2")
    d = Dataset(convert(renamed, tmp_path / "d.zarr", episodes=2, seed=0))
    with pytest.raises(DatasetError, match=r"\(name\)"):
        merge_datasets([a, d], tmp_path / "bad.zarr")


def test_info_statistics_of_frames_are_read_in_slabs_of_bounded_memory(tmp_path, monkeypatch):
    """Frames are read a few rows at a time (a slab of 65,536 rows of three small views held 48 GB
    in float64): with slabs of 3 rows the statistics are those of all the frames at once."""
    import hpt_kit.data.tools as tools
    from tests.conftest import make_image_toy

    cam = make_image_toy(size=8, length=5)
    path = convert(cam, tmp_path / "cam.zarr", episodes=3, seed=0)
    monkeypatch.setattr(tools, "STAT_BYTES", 3 * 8 * 8 * 8 * 3)  # float64 bytes of 3 frames of 8x8x3
    info = dataset_info(Dataset(path))
    frames = Dataset(path).array("image")[:].astype(np.float64)
    assert frames.shape[0] > 3
    stats = info["fields"]["image"]["stats"]
    assert stats["min"] == frames.min() and stats["max"] == frames.max()
    np.testing.assert_allclose(stats["mean"], frames.mean(), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], frames.std(), rtol=1e-9)
