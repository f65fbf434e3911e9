"""The format-independent half of importing: key checks, concatenation, frame sizes, language, bad
episodes stopped or skipped, the inferred spec and the atomic write. The importer here is a small
in-memory one; the real formats are tested in each importer plugin's own tests."""

from collections.abc import Iterator

import numpy as np
import pytest

from hpt_kit.core.importer import Feature, ImportSourceError, Selection, SourceEpisode, SourceInfo
from hpt_kit.core.registry import load_registry
from hpt_kit.data.importing import ImportOptions, import_dataset, is_imported
from hpt_kit.data.store import Dataset

TASKS = ("push the block", "open the drawer")


class ListImporter:
    """Episodes held in a list; ``bad`` maps an episode index to what is wrong with it."""

    name = "toylist"

    def __init__(self, episodes=4, steps=6, bad=None, frames=(12, 16)):
        self.n, self.steps, self.bad, self.frames = episodes, steps, bad or {}, frames

    def detect(self, path):
        return True

    def describe(self, path) -> SourceInfo:
        return SourceInfo(
            format=self.name,
            location=str(path),
            episodes=self.n,
            steps=self.n * self.steps,
            fps=15.0,
            features=(
                Feature("obs.pos", "vector", (3,), "float64"),
                Feature("obs.grip", "vector", (1,), "float32"),
                Feature("act", "vector", (2,), "float32"),
                Feature("cam.front", "image", (*self.frames, 3), "uint8"),
                Feature("task", "text", (), "string"),
            ),
            tasks=TASKS,
            default_state=("obs.pos", "obs.grip"),
            default_action="act",
            default_views=("cam.front",),
        )

    def episodes(self, path, selection: Selection) -> Iterator[SourceEpisode]:
        count = selection.episodes or self.n
        for i in range(count):
            rng = np.random.default_rng(i)
            steps = self.steps if self.bad.get(i) != "short" else 1
            arrays = {
                "obs.pos": rng.normal(size=(steps, 3)),
                "obs.grip": rng.uniform(size=steps).astype(np.float32),  # a scalar per step
                "act": rng.uniform(-2, 3, size=(steps, 2)).astype(np.float32),
                "cam.front": rng.integers(0, 255, size=(steps, *self.frames, 3), dtype=np.uint8),
            }
            if self.bad.get(i) == "nan":
                arrays["act"][3, 1] = np.nan
            if self.bad.get(i) == "missing":
                yield SourceEpisode(i, problem="video file videos/front/episode_000001.mp4 is missing")
                continue
            yield SourceEpisode(i, {k: v for k, v in arrays.items() if k in (*selection.state, selection.action, *selection.views)}, TASKS[i % 2])


@pytest.fixture(scope="module")
def registry():
    return load_registry(load_entrypoints=False, embodiments=False)


def test_an_import_infers_the_spec_and_stores_the_source(tmp_path, registry):
    src = tmp_path / "My Robot_Data"
    src.mkdir()
    path = import_dataset(ListImporter(), str(src), tmp_path / "out.zarr", ImportOptions(image_size=8), registry)
    ds = Dataset(path)
    spec = ds.spec
    assert ds.name == "my-robot-data" and ds.num_episodes == 4 and ds.num_steps == 24
    assert spec.observation.state_dim == 4 and spec.action.dim == 2 and spec.action.control_hz == 15.0
    assert spec.observation.image.views == ("front",) and (spec.observation.image.height, spec.observation.image.width) == (8, 8)
    assert spec.observation.language.encoder == "hash-ngram" and [s.modality for s in spec.stems] == ["state", "image", "language"]
    data = {f: ds.load(f) for f in ("state", "action", "image", "language")}
    assert data["image"].shape == (24, 1, 8, 8, 3) and data["language"].shape[0] == 24
    # Bounds from the data, and the state keys concatenated in the order given.
    np.testing.assert_allclose(spec.action.low, data["action"].min(axis=0), rtol=1e-6)
    first = ListImporter().episodes(src, Selection(("obs.pos", "obs.grip"), "act"))
    np.testing.assert_allclose(data["state"][:6, :3], next(first).arrays["obs.pos"], rtol=1e-6)
    assert spec.max_episode_steps == 6 and is_imported(ds.notes)
    assert ds.notes["import"]["state_keys"] == ["obs.pos", "obs.grip"] and ds.notes["instructions"] == list(TASKS)


def test_keys_are_checked_against_the_source_before_anything_is_written(tmp_path, registry):
    out = tmp_path / "out.zarr"
    with pytest.raises(ImportSourceError, match=r"no key 'obs.vel'; the keys it has: obs.pos, obs.grip, act, cam.front, task"):
        import_dataset(ListImporter(), str(tmp_path), out, ImportOptions(state=("obs.vel",)), registry)
    with pytest.raises(ImportSourceError, match=r"key 'task' holds text data .*must be vector data"):
        import_dataset(ListImporter(), str(tmp_path), out, ImportOptions(action="task"), registry)
    with pytest.raises(ImportSourceError, match=r"different frame sizes|must be image data"):
        import_dataset(ListImporter(), str(tmp_path), out, ImportOptions(views=("obs.pos",)), registry)
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))


@pytest.mark.parametrize(
    "bad, message",
    [
        ("nan", r"episode 2, key 'act': non-finite value nan at step 3"),
        ("short", r"episode 2: has 1 step\(s\); at least 2 are needed"),
        ("missing", r"episode 2: video file videos/front/episode_000001.mp4 is missing"),
    ],
)
def test_a_bad_episode_stops_the_import_naming_it_or_is_skipped_and_noted(tmp_path, registry, bad, message):
    out = tmp_path / "out.zarr"
    with pytest.raises(ImportSourceError, match=message + r".*--skip-bad"):
        import_dataset(ListImporter(bad={2: bad}), str(tmp_path), out, ImportOptions(views=()), registry)
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))
    path = import_dataset(ListImporter(bad={2: bad}), str(tmp_path), out, ImportOptions(views=(), skip_bad=True), registry)
    ds = Dataset(path)
    assert ds.num_episodes == 3
    assert [s["episode"] for s in ds.notes["skipped_episodes"]] == [2]


def test_first_episodes_no_language_and_views_of_different_sizes(tmp_path, registry):
    opts = ImportOptions(name="arm", episodes=2, text_encoder="none", views=("front",), state=("pos",))
    ds = Dataset(import_dataset(ListImporter(), str(tmp_path), tmp_path / "a.zarr", opts, registry))
    assert ds.num_episodes == 2 and ds.spec.observation.language is None
    assert ds.notes["import"]["views"] == ["cam.front"]  # "front" names it: an unambiguous tail
    assert (ds.spec.observation.image.height, ds.spec.observation.image.width) == (12, 16)  # as stored
    version = tmp_path / "bridge" / "1.0.0"
    version.mkdir(parents=True)
    ds = Dataset(import_dataset(ListImporter(), str(version), tmp_path / "b.zarr", ImportOptions(views=()), registry))
    assert ds.name == "bridge"  # a TFDS version folder is named by its dataset
