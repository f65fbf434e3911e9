"""The streaming start-up measurement's generated mixture: tiny imported datasets, some sharded, and a
streamed recipe over them that parses and names each one."""

from hpt_kit.core.overrides import load_recipe
from hpt_kit.data.shards import ShardedDataset
from hpt_kit.data.store import Dataset
from hpt_kit.lab.stream_startup import EPISODES, STEPS, write_datasets, write_recipe


def test_generated_datasets_and_recipe(tmp_path):
    names = write_datasets(tmp_path / "data", 4, sharded_every=2)
    assert names == ["gen-000", "gen-001", "gen-002", "gen-003"]
    opened = [Dataset(tmp_path / "data" / f"{n}.zarr") for n in names]
    assert [isinstance(d, ShardedDataset) for d in opened] == [False, True, False, True]
    assert all((d.num_episodes, d.num_steps) == (EPISODES, EPISODES * STEPS) and "import" in d.notes for d in opened)
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", names, readers=3), ())
    assert [d.embodiment for d in recipe.datasets] == names and recipe.train.stream and recipe.train.stream_readers == 3
