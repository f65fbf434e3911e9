import time

import numpy as np
import pytest

from hpt_kit.data.store import Dataset, DatasetError
from hpt_kit.data.stream import BlockSampler
from tests.data.test_sampler import _counting_dataset


@pytest.mark.parametrize("refresh", [2, 0])
def test_block_sampler_windows_stay_inside_episodes_and_memory_is_bounded(toy, tmp_path, refresh):
    lengths = [7, 3, 12, 5, 9] * 40  # 1440 steps
    ds = _counting_dataset(toy, tmp_path, lengths)
    ends = np.cumsum(lengths)
    starts = ends - np.array(lengths)
    # Stretches of 16 steps: most hold an episode edge and a stretch end close to many windows.
    sampler = BlockSampler(ds, observation_horizon=2, action_horizon=3, fields=["state"], block_steps=16, blocks=3, refresh=refresh)
    assert sampler.resident_bytes() == (3 + 1) * 16 * 4 * (3 + 1)  # 3 stretches + 1 being read
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        b = sampler.sample(32, rng)
        if not refresh:
            while not sampler._reader.ready():  # a disk as fast as sampling: a new stretch at every call
                time.sleep(0.001)
        obs, act = b["state"][:, :, 0], b["action"][:, :, 0]
        assert obs.shape == (32, 2) and act.shape == (32, 3)
        t = obs[:, -1]
        np.testing.assert_array_equal(act[:, 0], t)  # the chunk starts at the current step
        ep = np.searchsorted(ends, t, side="right")
        # Exactly the window, clamped at its episode's edges only (never where a stretch ends).
        np.testing.assert_array_equal(obs, np.maximum(t[:, None] + [-1, 0], starts[ep][:, None]))
        np.testing.assert_array_equal(act, np.minimum(t[:, None] + [0, 1, 2], ends[ep][:, None] - 1))
        seen.update(t.astype(int).tolist())
    assert len(seen) > 250  # stretches are refreshed: steps from some 28 stretches of 16, not the first 3
    assert sampler.served == 50 * 32 and sampler.reuse() == pytest.approx(sampler.served / sampler.steps_read)


def test_block_sampler_draws_only_from_the_chosen_episodes(toy, tmp_path):
    lengths = [7, 3, 12, 5, 9] * 20  # 720 steps, 100 episodes
    ds = _counting_dataset(toy, tmp_path, lengths)
    ends = np.cumsum(lengths)
    chosen = np.arange(0, 100, 3)  # every third episode, as one process's share
    sampler = BlockSampler(ds, 2, 3, ["state"], block_steps=50, blocks=2, refresh=1, episodes=chosen)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        t = sampler.sample(16, rng)["state"][:, -1, 0].astype(int)
        assert set(np.searchsorted(ends, t, side="right")) <= set(chosen)
        seen.update(t.tolist())
    allowed = {s for e in chosen for s in range(ends[e] - lengths[e], ends[e])}
    assert len(seen) > 0.7 * len(allowed)  # stretches land all over the chosen episodes


def test_block_sampler_continues_exactly_from_its_saved_state(toy, tmp_path):
    import json

    ds = _counting_dataset(toy, tmp_path, [7, 3, 12, 5, 9] * 40)
    make = lambda seed: BlockSampler(ds, 2, 3, ["state", "action"], block_steps=40, blocks=3, refresh=2, seed=seed)  # noqa: E731
    first = make(0)
    rng = np.random.default_rng(1)
    for _ in range(7):
        first.sample(8, rng)
    saved = json.loads(json.dumps(first.state()))  # as a checkpoint stores it
    rng_state = rng.bit_generator.state
    expected = [first.sample(8, rng) for _ in range(10)]
    second = make(99)  # other stretches until the state is loaded
    second.load_state(saved)
    rng.bit_generator.state = rng_state
    for want in expected:
        got = second.sample(8, rng)
        for f in want:
            np.testing.assert_array_equal(got[f], want[f])


def _readers() -> list[int]:
    """This process's live reading processes."""
    import os
    from pathlib import Path

    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and stat[0] != "Z" and b"hpt_kit.data.reader" in cmdline:
            pids.append(int(proc.name))
    return pids


def test_a_stretch_that_cannot_be_read_names_the_dataset_and_array_and_nothing_is_left_behind(toy, tmp_path):
    import gc

    ds = _counting_dataset(toy, tmp_path, [7, 3, 12, 5, 9] * 40)
    sampler = BlockSampler(ds, 2, 3, ["state"], block_steps=400, blocks=1, refresh=1, seed=0)
    assert len(_readers()) == 1
    for chunk in (p for p in (ds.path / "state" / "c").rglob("*") if p.is_file()):
        chunk.write_bytes(b"not zstd")  # damaged after the first stretches were read
    with pytest.raises(DatasetError, match=r"count\.zarr: reading a stretch failed: array 'state', rows \d+\.\.\d+: cannot be read"):
        for _ in range(200):  # until a stretch covers the damaged chunk
            sampler.sample(4, np.random.default_rng(0))
    with pytest.raises(DatasetError, match="reading a stretch failed"):
        sampler.sample(4, np.random.default_rng(0))  # the half-written stretch is never used
    del sampler
    gc.collect()  # the failed sampler's reading process goes with it
    deadline = time.time() + 10
    while _readers() and time.time() < deadline:
        time.sleep(0.05)
    assert not _readers()


def test_datasets_sharing_a_pool_of_readers_sample_exactly_as_with_a_reader_each(toy, tmp_path):
    from hpt_kit.data.reader import ReaderPool
    from hpt_kit.data.store import write_dataset

    datasets = []
    for i, lengths in enumerate([[7, 3, 12, 5, 9] * 6, [4, 11, 6] * 10, [9, 9, 2] * 8]):
        ends = np.cumsum(lengths)
        values = [np.arange(e - n, e, dtype=np.float32) + 1000 * i for n, e in zip(lengths, ends)]  # step + 1000 * dataset
        eps = [{"state": np.stack([v, v, v], 1), "action": v[:, None].copy()} for v in values]
        datasets.append(Dataset(write_dataset(tmp_path / f"d{i}.zarr", toy, eps)))

    def draw(readers):
        samplers = [BlockSampler(ds, 2, 3, ["state"], block_steps=24, blocks=2, refresh=2, seed=i, readers=readers)
                    for i, ds in enumerate(datasets)]
        rng = np.random.default_rng(3)
        batches = [[s.sample(6, rng) for s in samplers] for _ in range(8)]  # 4 swaps each, interleaved
        return samplers, batches

    _, alone = draw(None)  # a reading process per dataset, as before pools
    pool = ReaderPool(2)
    samplers, shared = draw(pool)
    assert pool.running() == 2 and len(_readers()) >= 2  # three datasets, two processes
    for want, got in zip(alone, shared):
        for a, b in zip(want, got):
            for f in a:
                np.testing.assert_array_equal(a[f], b[f])
    for i, s in enumerate(samplers):
        assert int(s.sample(4, np.random.default_rng(0))["state"][0, -1, 0]) // 1000 == i  # each its own rows
    samplers[0].close()  # one dataset gone: the others still read through the pool
    for _ in range(3):
        samplers[1].sample(4, np.random.default_rng(0))
    pool.close()
