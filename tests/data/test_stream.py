import numpy as np
import pytest

from hpt_kit.data.stream import BlockSampler
from tests.data.test_sampler import _counting_dataset


@pytest.mark.parametrize("refresh", [2, 0])
def test_block_sampler_windows_stay_inside_episodes_and_memory_is_bounded(toy, tmp_path, refresh):
    lengths = [7, 3, 12, 5, 9] * 40  # 1440 steps
    ds = _counting_dataset(toy, tmp_path, lengths)
    ends = np.cumsum(lengths)
    starts = ends - np.array(lengths)
    sampler = BlockSampler(ds, observation_horizon=2, action_horizon=3, fields=["state"], block_steps=64, blocks=3, refresh=refresh)
    assert sampler.resident_bytes() <= 3 * sampler.block_steps * 4 * (3 + 1)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        b = sampler.sample(32, rng)
        if not refresh:
            sampler._thread.join()  # a disk as fast as sampling: a new stretch at every call
        obs, act = b["state"][:, :, 0], b["action"][:, :, 0]
        assert obs.shape == (32, 2) and act.shape == (32, 3)
        t = obs[:, -1]
        np.testing.assert_array_equal(act[:, 0], t)  # the chunk starts at the current step
        ep = np.searchsorted(ends, t, side="right")
        for row, e in zip(np.concatenate([obs, act], 1), ep):
            assert starts[e] <= row.min() and row.max() < ends[e]  # never crosses an episode
            assert np.all(np.diff(row[:2]) >= 0) and np.all(np.diff(row[2:]) >= 0)
        seen.update(t.astype(int).tolist())
    assert len(seen) > 600  # stretches are refreshed: samples come from all over the dataset
    assert sampler.served == 50 * 32 and sampler.reuse() == pytest.approx(sampler.served / sampler.steps_read)
