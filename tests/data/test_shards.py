"""Sharded datasets: shards written by the atomic writer plus a manifest open as one dataset, equal to
the single store of the same episodes; training reads them the same, in memory and streamed; errors
name the shard."""

import json

import numpy as np
import pytest

from hpt_kit.core.spec import ConvertRequest
from hpt_kit.data.shards import ShardedDataset, merge_notes, shard_name, write_manifest
from hpt_kit.data.store import Dataset, DatasetError, write_dataset
from tests.conftest import make_toy

SIZES = (3, 4, 2)


def assert_same_dataset(a: Dataset, b: Dataset) -> None:
    """Same episodes in the same order with the same values; statistics equal to rounding."""
    assert (a.num_episodes, a.num_steps) == (b.num_episodes, b.num_steps)
    np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
    assert a.fields() == b.fields() and a.spec.to_dict() == b.spec.to_dict()
    for field in a.fields():
        np.testing.assert_array_equal(a.load(field), b.load(field))
    for part in ("state", "action"):
        for key, value in a.stats[part].items():
            np.testing.assert_allclose(b.stats[part][key], value, rtol=1e-12, atol=1e-15)


def sharded_toy(tmp_path, episodes):
    """The toy's episodes as one store and as shards of ``SIZES`` episodes with a manifest."""
    toy = make_toy()
    whole = write_dataset(tmp_path / "whole.zarr", toy, episodes, {"toy": True})
    folder = tmp_path / "sharded.zarr"
    folder.mkdir()
    starts = np.cumsum([0, *SIZES])
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        write_dataset(folder / shard_name(i), toy, episodes[a:b], {"toy": True})
    write_manifest(folder, [shard_name(i) for i in range(len(SIZES))], {"operation": "test"})
    return whole, folder


@pytest.fixture
def toy_episodes():
    return list(make_toy().convert_dataset(ConvertRequest(episodes=sum(SIZES), seed=4)))


def test_a_sharded_dataset_reads_as_the_single_store(tmp_path, toy_episodes):
    whole, folder = sharded_toy(tmp_path, toy_episodes)
    a, b = Dataset(whole), Dataset(folder)
    assert isinstance(b, ShardedDataset) and len(b.shards) == 3
    assert_same_dataset(a, b)
    assert b.notes == {"toy": True} and b.attrs["provenance"]["operation"] == "test"
    for i in range(a.num_episodes):
        for field, value in a.episode(i).items():
            np.testing.assert_array_equal(b.episode(i)[field], value)
    state = a.load("state")
    ends = b.episode_ends
    for start, stop in [(0, 5), (int(ends[2]) - 3, int(ends[2]) + 4), (1, int(ends[-1])), (int(ends[-2]), int(ends[-1]))]:
        np.testing.assert_array_equal(b.array("state")[start:stop], state[start:stop])
    np.testing.assert_array_equal(b.array("state")[int(ends[3]), 1:], state[int(ends[3]), 1:])
    assert b.array("state").shape == state.shape and len(b.array("action")) == len(state)
    # Statistics merged from the shards' sums, not averaged from their means.
    means = [Dataset(folder / shard_name(i)).stats["state"]["mean"] for i in range(3)]
    assert not np.allclose(np.mean(means, axis=0), b.stats["state"]["mean"])


@pytest.mark.parametrize("stream", [False, True], ids=["memory", "stream"])
def test_training_on_a_sharded_dataset_equals_training_on_the_store(tmp_path, toy_episodes, stream):
    import torch
    from safetensors.torch import load_file

    from hpt_kit.core.recipe import parse_recipe
    from hpt_kit.core.registry import load_registry
    from hpt_kit.train.loop import train
    from hpt_kit.weights.checkpoint import resolve_checkpoint
    from tests.train.test_loop import ToyPlugin

    whole, folder = sharded_toy(tmp_path, toy_episodes)
    registry = load_registry(load_entrypoints=False, extra_plugins=[("toys", ToyPlugin)])
    results = []
    for path in (whole, folder):
        train_cfg = {"steps": 4, "batch_size": 8, "val_every": 4, "checkpoint_every": 4, "log_every": 2, "val_fraction": 0.3}
        if stream:
            train_cfg |= {"stream": True, "stream_memory_mb": 0.003, "stream_blocks": 2, "stream_refresh": 2}
        recipe = parse_recipe({
            "trunk": {"preset": "custom", "embed_dim": 16, "num_blocks": 1, "num_heads": 2},
            "datasets": [{"embodiment": "toy", "path": str(path)}],
            "train": train_cfg,
        }, "test")
        run = tmp_path / f"run-{path.stem}"
        train(recipe, run, registry)
        results.append(resolve_checkpoint(run))
    assert results[0].stats == results[1].stats
    ta, tb = (load_file(str(tmp_path / f"run-{p.stem}" / "checkpoints" / "latest" / "model.safetensors")) for p in (whole, folder))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_errors_name_the_shard(tmp_path, toy_episodes):
    _, folder = sharded_toy(tmp_path, toy_episodes)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"][1]["episodes"] = 5
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=f"^{folder / shard_name(1)}: holds 4 episodes .* says 5"):
        Dataset(folder)
    manifest["shards"][1]["episodes"] = 4
    (folder / "manifest.json").write_text(json.dumps(manifest))
    chunk = folder / shard_name(2) / "action" / "c" / "0" / "0"
    chunk.unlink()
    with pytest.raises(DatasetError, match=f"^{folder / shard_name(2)}: array 'action' chunk 0/0 .* is missing"):
        Dataset(folder)


def test_notes_of_ranges_merge_as_the_whole_run_writes_them():
    parts = [
        {"seed": 3, "episodes_attempted": 4, "episodes_dropped": 1, "expert_success_rate": 0.75,
         "per_task": {"a": {"episodes": 3, "episodes_attempted": 4, "episodes_dropped": 1, "expert_success_rate": 0.75}},
         "instructions": ["go a"], "episode_instructions": [0, 0, 0], "skipped_episodes": [{"episode": 1, "reason": "x"}]},
        {"seed": 3, "episodes_attempted": 2, "episodes_dropped": 0, "expert_success_rate": 1.0, "first_episode": 3,
         "per_task": {"b": {"episodes": 2, "episodes_attempted": 2, "episodes_dropped": 0, "expert_success_rate": 1.0}},
         "instructions": ["go b", "go a"], "episode_instructions": [0, 1], "skipped_episodes": [], "sim": "2"},
    ]
    assert merge_notes(parts) == {
        "seed": 3, "episodes_attempted": 6, "episodes_dropped": 1, "expert_success_rate": 5 / 6,
        "per_task": {"a": {"episodes": 3, "episodes_attempted": 4, "episodes_dropped": 1, "expert_success_rate": 0.75},
                     "b": {"episodes": 2, "episodes_attempted": 2, "episodes_dropped": 0, "expert_success_rate": 1.0}},
        "instructions": ["go a", "go b"], "episode_instructions": [0, 0, 0, 1, 0],
        "skipped_episodes": [{"episode": 1, "reason": "x"}], "sim": "2",
    }


def test_shards_written_before_moments_were_stored_merge_the_same(tmp_path, toy_episodes):
    import zarr

    whole, folder = sharded_toy(tmp_path, toy_episodes)
    group = zarr.open_group(store=str(folder / shard_name(1)), mode="r+", zarr_format=3)
    attrs = dict(group.attrs)
    del attrs["moments"]  # as the writer left stores before it kept the raw sums
    group.attrs.clear()
    group.attrs.update(attrs)
    assert "moments" not in Dataset(folder / shard_name(1)).attrs
    write_manifest(folder, [shard_name(i) for i in range(len(SIZES))], {"operation": "test"})
    assert_same_dataset(Dataset(whole), Dataset(folder))
