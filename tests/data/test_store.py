import numpy as np
import pytest
import zarr

from hpt_kit.core.spec import ConvertRequest, SpecError
from hpt_kit.data.convert import convert, default_dataset_path
from hpt_kit.data.store import Dataset, DatasetError, write_dataset


def test_round_trip(toy, data_root):
    path = convert(toy, episodes=5, seed=3)
    assert path == default_dataset_path("toy") and path.parent == data_root
    ds = Dataset(path)
    originals = list(toy.convert_dataset(ConvertRequest(episodes=5, seed=3)))
    assert ds.num_episodes == 5 and ds.name == "toy"
    assert ds.num_steps == sum(len(e["action"]) for e in originals)
    for i, ep in enumerate(originals):
        back = ds.episode(i)
        np.testing.assert_array_equal(back["state"], ep["state"])
        np.testing.assert_array_equal(back["action"], ep["action"])
    assert ds.spec.to_dict() == toy.to_dict()
    assert ds.notes["toy"] is True and ds.notes["seed"] == 3
    states = np.concatenate([e["state"] for e in originals])
    np.testing.assert_allclose(ds.stats["state"]["mean"], states.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.stats["state"]["std"], states.std(0), rtol=1e-4, atol=1e-6)
    actions = np.concatenate([e["action"] for e in originals])
    np.testing.assert_allclose(ds.stats["action"]["min"], actions.min(0))
    attrs = zarr.open_group(str(path), mode="r").attrs
    assert attrs["format"] == "hpt-kit-dataset" and attrs["format_version"] == 1


def _episodes_then(toy, bad):
    yield from toy.convert_dataset(ConvertRequest(episodes=2, seed=0))
    yield bad


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"state": np.zeros((4, 3), np.float32), "action": np.zeros((4, 2), np.float32)}, r"episode 2, field 'action': shape \(4, 2\)"),
        ({"state": np.full((4, 3), np.nan, np.float32), "action": np.zeros((4, 1), np.float32)}, r"episode 2, field 'state': non-finite value at step 0"),
        ({"state": np.zeros((4, 3), np.float32)}, r"episode 2: missing field\(s\) \['action'\]"),
        ({"state": np.zeros((4, 3), np.float32), "action": np.zeros((3, 1), np.float32)}, r"episode 2, field 'action': 3 steps, other fields have 4"),
        ({"state": np.array([["a"] * 3] * 4), "action": np.zeros((4, 1), np.float32)}, r"episode 2, field 'state': dtype <U1 is not numeric"),
    ],
)
def test_a_bad_episode_names_embodiment_episode_and_field_and_leaves_nothing(toy, tmp_path, bad, message):
    out = tmp_path / "toy.zarr"
    with pytest.raises(SpecError, match=r"embodiment 'toy', " + message):
        write_dataset(out, toy, _episodes_then(toy, bad))
    assert list(tmp_path.iterdir()) == []  # no half dataset, no temporary folder


def test_interrupted_conversion_leaves_the_old_dataset_intact(toy, tmp_path):
    out = convert(toy, tmp_path / "toy.zarr", episodes=3, seed=0)

    def crashing():
        yield from toy.convert_dataset(ConvertRequest(episodes=2, seed=1))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(out, toy, crashing(), overwrite=True)
    assert Dataset(out).num_episodes == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.zarr"]
    with pytest.raises(FileExistsError, match="already exists"):
        convert(toy, out, episodes=2)
    convert(toy, out, episodes=2, overwrite=True)
    assert Dataset(out).num_episodes == 2


def test_overwrite_replaces_only_a_dataset(toy, tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    with pytest.raises(DatasetError, match="not a zarr v3 dataset|attribute 'format'"):
        convert(toy, precious, episodes=2, overwrite=True)
    assert (precious / "chapter1.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_converter_that_gives_too_few_episodes_is_an_error(toy, tmp_path):
    with pytest.raises(SpecError, match="asked for 5 episodes"):
        convert(toy.__class__(**{**toy.__dict__, "convert_dataset": lambda r: toy.convert_dataset(ConvertRequest(2, 0))}), tmp_path / "x.zarr", episodes=5)
    assert not (tmp_path / "x.zarr").exists()


def test_reading_a_bad_store_names_the_file_and_key(toy, tmp_path):
    with pytest.raises(DatasetError, match="no such dataset"):
        Dataset(tmp_path / "missing.zarr")
    path = convert(toy, tmp_path / "toy.zarr", episodes=2)
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["format_version"] = 99
    with pytest.raises(DatasetError, match=r"toy.zarr: format_version 99 is not supported"):
        Dataset(path)
    group.attrs["format_version"] = 1
    del group["action"]
    with pytest.raises(DatasetError, match=r"toy.zarr: array 'action' is missing"):
        Dataset(path)


def test_appends_in_whole_chunks_keep_every_step_and_bound_the_buffer(toy, tmp_path, monkeypatch):
    """With 10-step chunks and appends of 3 chunks, 7 episodes of uneven length (67 steps) are
    written as 6 whole-chunk appends' worth plus the rest at the end, and read back exactly."""
    import hpt_kit.data.store as store

    monkeypatch.setattr(store, "CHUNK_BYTES", 10 * 3 * 4)  # the toy's state is 3 float32: 10 steps a chunk
    monkeypatch.setattr(store, "FLUSH_BYTES", 3 * 10 * 3 * 4)
    appended = []
    append = zarr.Array.append

    def counted(self, data, axis=0):
        appended.append((self.basename, len(data)))
        return append(self, data, axis=axis)

    monkeypatch.setattr(zarr.Array, "append", counted)
    rng = np.random.default_rng(0)
    lengths = [5, 13, 9, 11, 2, 17, 10]
    episodes = [{"state": rng.normal(size=(n, 3)).astype(np.float32), "action": rng.normal(size=(n, 1)).astype(np.float32)}
                for n in lengths]
    path = write_dataset(tmp_path / "toy.zarr", toy, iter(episodes))
    ds = Dataset(path)
    assert ds.num_steps == sum(lengths) == 67
    for i, ep in enumerate(episodes):
        np.testing.assert_array_equal(ds.episode(i)["state"], ep["state"])
        np.testing.assert_array_equal(ds.episode(i)["action"], ep["action"])
    states = [n for name, n in appended if name == "state"]
    assert sum(states) == 67 and all(n % 10 == 0 for n in states[:-1]) and max(states) <= 40


def test_a_small_view_into_a_large_buffer_does_not_keep_the_buffer_alive_while_buffered(toy, tmp_path):
    """An importer may hand over each episode's fields as views into a much larger buffer (a decoded
    file, a record batch). The writer buffers rows until a chunk fills, possibly for thousands of
    episodes: it keeps copies of such views, so each large buffer is freed once the episode is
    written, and the data are the same."""
    import gc
    import weakref

    alive: list[int] = []
    refs: list[weakref.ref] = []
    written = []

    def episodes():
        rng = np.random.default_rng(0)
        for _ in range(4):
            big = rng.normal(size=(100_000, 3)).astype(np.float32)  # 1.2 MB, of which 8 rows are the episode
            refs.append(weakref.ref(big))
            ep = {"state": big[:8], "action": big[8:16, :1]}
            written.append({k: v.copy() for k, v in ep.items()})
            yield ep
            del big, ep
            gc.collect()
            alive.append(sum(r() is not None for r in refs[:-1]))  # the episodes before the one just handed over

    path = write_dataset(tmp_path / "views.zarr", toy, episodes())
    assert alive == [0, 0, 0, 0]  # with the views buffered as they are, 0, 1, 2, 3 earlier buffers stayed alive
    ds = Dataset(path)
    for i, ep in enumerate(written):
        np.testing.assert_array_equal(ds.episode(i)["state"], ep["state"])
        np.testing.assert_array_equal(ds.episode(i)["action"], ep["action"])


def test_a_view_into_an_arrow_array_counts_the_arrow_buffers_it_keeps_alive():
    """``to_numpy`` on a slice of an Arrow column gives a view whose base is the Arrow array: the
    whole column's buffer stays alive, and the writer sees its size, not the slice's."""
    pa = pytest.importorskip("pyarrow")
    from hpt_kit.data.store import _kept_alive

    column = pa.array(np.arange(400_000, dtype=np.float32))  # 1.6 MB
    view = column.slice(1000, 8 * 3).to_numpy(zero_copy_only=True).reshape(8, 3)
    assert view.nbytes == 96 and _kept_alive(view) == 1_600_000
    assert _kept_alive(view.copy()) == 96
