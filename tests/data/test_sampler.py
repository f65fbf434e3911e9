import numpy as np

from hpt_kit.data.convert import convert
from hpt_kit.data.sampler import SequenceSampler, make_samplers, mask_history, split_episodes
from hpt_kit.data.store import Dataset, write_dataset


def _counting_dataset(spec, tmp_path, lengths):
    """Episodes whose state[0] is the global step index and action the same, to read windows off."""
    eps, t = [], 0
    for n in lengths:
        idx = np.arange(t, t + n, dtype=np.float32)
        eps.append({"state": np.stack([idx, idx, idx], 1), "action": idx[:, None].copy()})
        t += n
    return Dataset(write_dataset(tmp_path / "count.zarr", spec, eps))


def test_windows_are_padded_at_episode_edges_and_never_cross_them(toy, tmp_path):
    ds = _counting_dataset(toy, tmp_path, [4, 3])  # steps 0-3 and 4-6
    s = SequenceSampler(ds, [0, 1], observation_horizon=2, action_horizon=3, fields=["state"])
    assert len(s) == 7
    b = s.batch(np.arange(7))
    obs = b["state"][:, :, 0]
    act = b["action"][:, :, 0]
    np.testing.assert_array_equal(obs, [[0, 0], [0, 1], [1, 2], [2, 3], [4, 4], [4, 5], [5, 6]])
    np.testing.assert_array_equal(act, [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3], [4, 5, 6], [5, 6, 6], [6, 6, 6]])
    assert b["state"].shape == (7, 2, 3) and b["action"].shape == (7, 3, 1)


def test_split_is_by_episode_and_seeded():
    train, val = split_episodes(10, 0.2, seed=1)
    assert len(val) == 2 and set(train).isdisjoint(val) and sorted([*train, *val]) == list(range(10))
    again = split_episodes(10, 0.2, seed=1)
    assert np.array_equal(again[1], val)
    assert len(split_episodes(3, 0.01, 0)[1]) == 1  # a positive fraction keeps one episode out
    assert len(split_episodes(1, 0.5, 0)[1]) == 0  # but never the only one


def test_train_and_validation_samplers_cover_disjoint_episodes(toy, tmp_path):
    ds = Dataset(convert(toy, tmp_path / "t.zarr", episodes=10))
    train, val = make_samplers(ds, 2, 3, ["state"], val_fraction=0.3, seed=0)
    train_steps, val_steps = set(train.index.tolist()), set(val.index.tolist())
    assert train_steps.isdisjoint(val_steps) and len(train_steps | val_steps) == ds.num_steps
    batch = train.sample(16, np.random.default_rng(0))
    assert batch["state"].shape == (16, 2, 3) and batch["action"].shape == (16, 3, 1)
    assert sum(len(b["action"]) for b in val.batches(4)) == len(val)
    demos, _ = make_samplers(ds, 2, 3, ["state"], val_fraction=0.0, seed=0, max_episodes=2)
    assert len(demos) == int(ds.episode_ends[1])


def test_history_mask_shortens_histories_like_an_episode_start():
    B, H = 400, 4
    steps = np.broadcast_to(np.arange(H, dtype=np.float32)[None, :, None], (B, H, 3)).copy()  # step j holds j
    images = np.broadcast_to(np.arange(H, dtype=np.float32)[None, :, None, None], (B, H, 2, 5)).copy()
    batch = {"state": steps, "image_features": images, "action": np.zeros((B, 2, 1), np.float32)}
    out = mask_history(batch, ["state", "image_features"], 0.5, np.random.default_rng(0))
    assert np.array_equal(batch["state"], steps)  # the input is untouched
    first = out["state"][:, 0, 0].astype(int)  # oldest step each sample still sees
    masked = first > 0
    assert 0.4 < masked.mean() < 0.6  # about prob of the samples
    assert set(first[masked]) == set(range(1, H))  # every shortened length occurs
    for i in range(B):  # steps before the oldest kept one repeat it; the newest ones are untouched
        expect = np.maximum(np.arange(H), first[i]).astype(np.float32)
        assert np.array_equal(out["state"][i, :, 0], expect)
        assert np.array_equal(out["image_features"][i, :, 0, 0], expect)  # fields masked alike
    assert np.array_equal(out["state"][:, -1], steps[:, -1])
    assert out["action"] is batch["action"]
    same = mask_history(batch, ["state"], 0.0, np.random.default_rng(0))
    assert np.array_equal(same["state"], steps)
    assert np.array_equal(mask_history(batch, ["state", "image_features"], 0.5, np.random.default_rng(0))["state"], out["state"])


def test_validation_read_from_disk_equals_validation_in_memory(toy, tmp_path, monkeypatch):
    import hpt_kit.data.sampler as sampler_module
    from hpt_kit.data.stream import BlockSampler, Streaming

    ds = _counting_dataset(toy, tmp_path, [7, 3, 12, 5, 9] * 8)
    monkeypatch.setattr(sampler_module, "STATS_ROWS", 16)  # statistics in many slabs
    mem_train, mem_val = make_samplers(ds, 2, 3, ["state"], val_fraction=0.3, seed=0)
    disk_train, disk_val = make_samplers(ds, 2, 3, ["state"], val_fraction=0.3, seed=0, stream=Streaming(0.001, 2, 1))
    assert isinstance(disk_train, BlockSampler) and not isinstance(disk_val.arrays["state"], np.ndarray)
    for a, b in zip(mem_val.batches(5), disk_val.batches(5), strict=True):
        for f in a:
            np.testing.assert_array_equal(a[f], b[f])
    # Statistics from slabs of 16 rows equal those of the training episodes' rows taken directly.
    train_eps, _ = split_episodes(ds.num_episodes, 0.3, seed=0)
    rows = np.concatenate([np.arange(ds.episode_starts[e], ds.episode_ends[e]) for e in train_eps])
    assert len(rows) < ds.num_steps
    state, action = ds.load("state")[rows].astype(np.float64), ds.load("action")[rows]
    for stats in (mem_train.stats, disk_train.stats):
        np.testing.assert_allclose(stats["state"]["mean"], state.mean(0), rtol=1e-12)
        np.testing.assert_allclose(stats["state"]["std"], state.std(0), rtol=1e-9)
        np.testing.assert_array_equal(stats["action"]["min"], action.min(0))
        np.testing.assert_array_equal(stats["action"]["max"], action.max(0))
    # The streamed sampler trains on the training episodes only.
    val_steps = set(mem_val.index.tolist())
    t = disk_train.sample(200, np.random.default_rng(0))["state"][:, -1, 0].astype(int)
    assert val_steps and not val_steps & set(t.tolist())


def test_normaliser_statistics_come_from_the_stored_episode_moments_without_reading_the_steps(toy, tmp_path):
    """Statistics over some episodes are summed from the per-episode moments the writer stores: equal
    to the same statistics worked out from the steps, for a single store, for shards, and for a
    dataset written before the moments were stored (which is read step by step instead)."""
    import shutil

    from hpt_kit.data.sampler import episode_statistics
    from hpt_kit.data.shards import shard_name, write_manifest
    from hpt_kit.data.store import EPISODE_MOMENTS

    rng = np.random.default_rng(3)
    lengths = [5, 9, 2, 7, 4, 6]
    eps = [{"state": rng.normal(size=(n, 3)).astype(np.float32), "action": rng.uniform(-2, 2, (n, 1)).astype(np.float32)}
           for n in lengths]
    chosen = [0, 2, 3, 5]
    state = np.concatenate([eps[i]["state"] for i in chosen]).astype(np.float64)
    action = np.concatenate([eps[i]["action"] for i in chosen])
    single = Dataset(write_dataset(tmp_path / "one.zarr", toy, eps))
    assert single.episode_moments().shape == (6, 2 * 3 + 2 * 1)
    folder = tmp_path / "sharded.zarr"
    folder.mkdir()
    for i, part in enumerate((eps[:2], eps[2:])):
        write_dataset(folder / shard_name(i), toy, part)
    write_manifest(folder, [shard_name(0), shard_name(1)], {"operation": "test"})
    older = tmp_path / "older.zarr"
    shutil.copytree(single.path, older)
    shutil.rmtree(older / EPISODE_MOMENTS)
    assert Dataset(older).episode_moments() is None
    for ds, steps in ((single, {}), (Dataset(folder), {}), (Dataset(older), None)):  # {}: no step may be read
        arrays = {"state": ds.array("state"), "action": ds.array("action")} if steps is None else steps
        got = episode_statistics(ds, arrays, np.array(chosen))
        np.testing.assert_allclose(got["state"]["mean"], state.mean(0), rtol=1e-9)
        np.testing.assert_allclose(got["state"]["std"], state.std(0), rtol=1e-6)
        np.testing.assert_array_equal(got["action"]["min"], action.min(0))
        np.testing.assert_array_equal(got["action"]["max"], action.max(0))
    assert single.stats["state"]["mean"] != got["state"]["mean"]  # the chosen episodes', not the whole dataset's
