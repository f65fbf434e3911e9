"""The ``lerobot`` importer on datasets written here in LeRobot's own layouts (v2.1 and v3.0) with
pyarrow and PyAV: what ``describe`` reports, what ``episodes`` reads (values, frames picked by
timestamp, scaling, instructions), the episodes it reports as unreadable, the selections it refuses,
and one real ``hpt-kit import`` run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hpt_kit.core.importer import IMAGE, VECTOR, ImportSourceError, Selection

from hpt_kit_lerobot.importer import LeRobotImporter

writer = sys.modules["lerobot_fixtures"]  # loaded by conftest.py
IMPORTER = LeRobotImporter()
STATE = "observation.state"
ENV = "observation.environment_state"
FRONT, WRIST, TOP = (f"observation.images.{c}" for c in ("front", "wrist", "top"))
LEVEL_SLACK = 4  # lossy video: a flat grey comes back within a few levels


def _episodes(root: Path, **kw) -> list:
    kw.setdefault("state", (STATE,))
    kw.setdefault("action", "action")
    return list(IMPORTER.episodes(root, Selection(**kw)))


def _levels(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(axis=1)


def _expected_levels(episode: int, steps: int, per_step: int) -> np.ndarray:
    """Row ``t`` shows camera frame ``t * per_step`` (the camera records ``per_step`` frames a step)."""
    return np.array([writer.frame_level(episode, t * per_step) for t in range(steps)], float)


# describe / detect ------------------------------------------------------------------------------


def test_detect(v21, v3, tmp_path):
    assert IMPORTER.detect(v21) and IMPORTER.detect(v3)
    assert not IMPORTER.detect(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/info.json").write_text(json.dumps({"codebase_version": "v1.6"}))
    assert not IMPORTER.detect(tmp_path)
    with pytest.raises(ImportSourceError, match="v1.6"):
        IMPORTER.describe(tmp_path)


@pytest.mark.parametrize("name, version, codec, views", [
    ("v21", "v2.1", "video/h264", (FRONT, WRIST)),
    ("v3", "v3.0", "video/av1", (FRONT, WRIST, TOP)),
])
def test_describe(request, name, version, codec, views):
    root = request.getfixturevalue(name)
    info = IMPORTER.describe(root)
    assert (info.format, info.fps, info.robot, info.extra["codebase_version"]) == ("lerobot", 10.0, "so100", version)
    assert info.episodes == {"v21": 3, "v3": 4}[name] and info.steps == info.episodes * 12
    assert info.tasks == writer.TASKS
    assert (info.default_state, info.default_action, info.default_views) == ((STATE,), "action", views)
    assert info.feature(STATE).kind == VECTOR and info.feature(STATE).shape == (4,)
    assert info.feature("action").shape == (3,) and info.feature(ENV).shape == (4,)  # (2, 2) flattened
    assert info.feature("timestamp").shape == (1,) and info.feature("index").dtype == "int64"
    front, wrist = info.feature(FRONT), info.feature(WRIST)
    assert (front.kind, front.shape, front.dtype, front.fps) == (IMAGE, (48, 64, 3), codec, 10.0)
    assert wrist.fps == 20.0
    if name == "v3":  # stored (3, H, W) with channel-first names; PNG bytes in the rows
        assert (info.feature(TOP).shape, info.feature(TOP).dtype) == ((48, 64, 3), "png")


# episodes: values and frames --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["v21", "v3", "v3_h264"])
def test_episode_values_and_frames(request, name):
    root = request.getfixturevalue(name)
    info = IMPORTER.describe(root)
    eps = _episodes(root, state=(STATE, ENV), views=info.default_views)
    assert [e.index for e in eps] == list(range(info.episodes))
    for e in eps:
        assert e.problem is None
        steps = len(e.arrays[STATE])
        state = np.stack([writer.state_value(e.index, t) for t in range(steps)])
        np.testing.assert_array_equal(e.arrays[STATE], state)
        np.testing.assert_array_equal(e.arrays["action"], -state[:, :3])
        np.testing.assert_array_equal(e.arrays[ENV][0], np.arange(4) + e.index)
        assert e.instruction == writer.TASKS[e.index % 2]
        for view in info.default_views:
            frames = e.arrays[view]
            assert frames.shape == (steps, 48, 64, 3) and frames.dtype == np.uint8
            per_step = 2 if view == WRIST else 1  # the 20 fps camera: every other frame
            np.testing.assert_allclose(_levels(frames), _expected_levels(e.index, steps, per_step), atol=LEVEL_SLACK)


def test_scaling_first_episodes_and_selected_keys_only(v3):
    eps = _episodes(v3, views=(WRIST, TOP), episodes=2, image_size=(24, 32))
    assert [e.index for e in eps] == [0, 1]
    assert set(eps[1].arrays) == {STATE, "action", WRIST, TOP}
    for view in (WRIST, TOP):
        assert eps[1].arrays[view].shape == (12, 24, 32, 3)
    np.testing.assert_allclose(_levels(eps[1].arrays[TOP]), _expected_levels(1, 12, 1), atol=1)


def test_scalar_keys_become_one_column(v21):
    (ep, *_) = _episodes(v21, state=(STATE, "frame_index"), action="index", episodes=1)
    assert ep.arrays["frame_index"].shape == (12, 1) and ep.arrays["index"][:, 0].tolist() == list(range(12))


def test_cameras_outside_observation_images_are_the_default_views_when_none_is_inside(v21, copy_of):
    root = copy_of(v21)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"] = {k.replace("observation.images.", "observation.image_"): v for k, v in info["features"].items()}
    (root / "meta/info.json").write_text(json.dumps(info))
    assert IMPORTER.describe(root).default_views == ("observation.image_front", "observation.image_wrist")


# episodes a reader cannot use -------------------------------------------------------------------


def test_missing_video_is_one_bad_episode(v21, copy_of):
    root = copy_of(v21)
    missing = writer.video_path(root, 1, "wrist")
    missing.unlink()
    eps = _episodes(root, views=(FRONT, WRIST))
    assert [e.problem is None for e in eps] == [True, False, True]
    assert str(missing) in eps[1].problem and WRIST in eps[1].problem and "episode 1" in eps[1].problem
    assert not eps[1].arrays


def test_undecodable_video_is_one_bad_episode(v21, copy_of):
    root = copy_of(v21)
    broken = writer.video_path(root, 0, "front")
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    eps = _episodes(root, views=(FRONT,))
    assert eps[0].problem and str(broken) in eps[0].problem and FRONT in eps[0].problem
    assert eps[1].problem is None


def test_missing_v3_video_file_fails_the_episodes_it_holds(v3, copy_of):
    root = copy_of(v3)
    writer.video_path(root, 3, "front").unlink()  # file-001.mp4: episodes 2 and 3
    eps = _episodes(root, views=(FRONT,))
    assert [e.problem is None for e in eps] == [True, True, False, False]
    assert "file-001.mp4" in eps[2].problem and "episode 2" in eps[2].problem


@pytest.mark.parametrize("name, episode", [("v21", 2), ("v3", 1)])
def test_timestamps_off_the_frames(request, copy_of, name, episode):
    root = copy_of(request.getfixturevalue(name))
    writer.shift_timestamps(root, episode)
    eps = _episodes(root, views=(FRONT,))
    bad = [e.index for e in eps if e.problem]
    assert bad == [episode]
    problem = eps[episode].problem
    assert "timestamps do not match" in problem and FRONT in problem and f"episode {episode}" in problem
    assert str(writer.video_path(root, episode, "front")) in problem


def test_ragged_state(v21, copy_of):
    root = copy_of(v21)
    writer.make_ragged(root, 0)
    eps = _episodes(root)
    assert eps[0].problem and "ragged" in eps[0].problem and STATE in eps[0].problem
    assert "episode_000000.parquet" in eps[0].problem
    assert eps[1].problem is None and eps[2].problem is None


def test_missing_data_file(v21, copy_of):
    root = copy_of(v21)
    (root / "data/chunk-000/episode_000002.parquet").unlink()
    eps = _episodes(root)
    assert eps[2].problem and "episode_000002.parquet" in eps[2].problem and eps[1].problem is None


# selections the source cannot serve -------------------------------------------------------------


def test_unknown_key_lists_the_keys(v3):
    with pytest.raises(ImportSourceError, match="observation.nope.*the keys it has: observation.state"):
        _episodes(v3, state=("observation.nope",))


@pytest.mark.parametrize("kw, match", [
    ({"state": (FRONT,)}, "must be numeric"),
    ({"views": (STATE,)}, "must be a video or image"),
    ({"options": {"split": "train"}}, "unknown option"),
])
def test_refused_selections(v21, kw, match):
    with pytest.raises(ImportSourceError, match=match):
        _episodes(v21, **kw)


def test_bad_metadata_is_a_source_error(v21, copy_of):
    root = copy_of(v21)
    (root / "meta/info.json").write_text("{not json")
    with pytest.raises(ImportSourceError, match="info.json"):
        IMPORTER.describe(root)


def test_registered_through_the_entry_point():
    from hpt_kit.core.registry import load_registry

    registry = load_registry()
    assert isinstance(registry.importers["lerobot"].importer, LeRobotImporter)


# the real command -------------------------------------------------------------------------------


@pytest.mark.slow
def test_hpt_kit_import_end_to_end(v3, tmp_path):
    from hpt_kit.data.store import Dataset

    hpt_kit = str(Path(sys.executable).with_name("hpt-kit"))
    out = tmp_path / "x.zarr"
    cmd = [hpt_kit, "import", "lerobot", str(v3), "--state", STATE, "--state", ENV, "--view", FRONT,
           "--view", WRIST, "--image-size", "32", "--episodes", "3", "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    ds = Dataset(out)
    assert ds.num_episodes == 3 and ds.num_steps == 36
    assert ds.spec.observation.state_dim == 8 and ds.spec.action.dim == 3
    state, action, image = ds.load("state"), ds.load("action"), ds.load("image")
    assert state.shape == (36, 8) and action.shape == (36, 3)
    assert image.shape == (36, 2, 32, 32, 3) and image.dtype == np.uint8
    assert np.isfinite(state).all() and np.isfinite(action).all()
    np.testing.assert_array_equal(state[12, :4], writer.state_value(1, 0))


def test_v3_rows_found_by_episode_index_when_not_where_meta_says(v3, copy_of):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = copy_of(v3)
    path = root / "data/chunk-000/file-000.parquet"  # episodes 0 and 1: store episode 1 first
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table.slice(12), table.slice(0, 12)]), path, row_group_size=5)
    eps = _episodes(root, episodes=2)
    for e in eps:
        assert e.problem is None
        np.testing.assert_array_equal(e.arrays[STATE][:, 0], e.index * 100 + np.arange(12))


def test_no_state_imports_a_state_free_spec(v21, tmp_path):
    from hpt_kit.data.importing import ImportOptions, import_dataset
    from hpt_kit.data.store import Dataset

    ds = Dataset(import_dataset(IMPORTER, str(v21), tmp_path / "n.zarr", ImportOptions(state=(), episodes=1, image_size=16, text_encoder="none")))
    assert ds.spec.observation.state_dim == 0 and "state" not in [s.modality for s in ds.spec.stems]
    assert ds.episode(0)["state"].shape[1] == 0 and ds.episode(0)["image"].shape[2:] == (16, 16, 3)


def test_vectors_own_their_values(tmp_path):
    """A state or action column comes back as an array of its own: a zero-copy view would pin the
    whole row group it was read with for as long as the writer buffers the rows, and a serial import
    of 10,000 episodes grew by 0.45 GB that way."""
    root = writer.write_lerobot(tmp_path, episodes=6, steps=20, cameras=(), version="v3.0", episodes_per_file=6)
    held = [e.arrays[key] for e in _episodes(root) for key in (STATE, "action")]
    assert len(held) == 12
    assert all(a.base is None or (isinstance(a.base, np.ndarray) and a.base.flags.owndata) for a in held)
