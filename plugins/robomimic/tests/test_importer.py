"""The robomimic importer against files written in robomimic's layout with h5py: registration,
detection, describe(), episodes() with every selection option, and each kind of bad input."""

from __future__ import annotations

import json
from importlib import metadata

import h5py
import numpy as np
import pytest
from hpt_kit.core.importer import IMAGE, VECTOR, ImportSourceError, Selection
from hpt_kit.core.registry import load_registry

from hpt_kit_robomimic.importer import RobomimicImporter

from .conftest import GOOD_LENGTHS
from .fixtures import env_args, write_robomimic

USUAL = ("obs/robot0_eef_pos", "obs/robot0_eef_quat", "obs/robot0_gripper_qpos", "obs/object")
VIEWS = ("obs/agentview_image", "obs/robot0_eye_in_hand_image")


@pytest.fixture(scope="module")
def importer():
    return RobomimicImporter()


def default_selection(**kw) -> Selection:
    return Selection(state=USUAL, action="actions", views=VIEWS, **kw)


def test_the_entry_point_registers_the_importer():
    dist = metadata.distribution("hpt-kit-robomimic")
    points = {ep.name: ep.value for ep in dist.entry_points if ep.group == "hpt_kit"}
    assert points == {"robomimic": "hpt_kit_robomimic.plugin"}
    registry = load_registry(embodiments=False)
    registered = registry.importers["robomimic"]
    assert registered.plugin.distribution == "hpt-kit-robomimic"
    assert not [e for e in registry.errors if e.plugin == "robomimic"]


def test_detect_accepts_robomimic_files_only(importer, good_file, tmp_path):
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    assert importer.detect(good_file)
    assert not importer.detect(text)
    assert not importer.detect(other)
    assert not importer.detect(tmp_path)
    assert not importer.detect(tmp_path / "missing.hdf5")


def test_describe_reports_features_defaults_and_metadata(importer, good_file):
    info = importer.describe(good_file)
    assert (info.format, info.episodes, info.steps, info.fps) == ("robomimic", 12, sum(GOOD_LENGTHS), 20.0)
    assert info.default_state == USUAL
    assert (info.default_action, info.default_views) == ("actions", VIEWS)
    assert info.robot == "Panda" and info.tasks == ()
    shapes = {f.key: (f.kind, f.shape, f.dtype) for f in info.features}
    assert shapes["obs/robot0_eef_quat"] == (VECTOR, (4,), "float64")
    assert shapes["obs/object"] == (VECTOR, (10,), "float64")
    assert shapes["obs/agentview_image"] == (IMAGE, (48, 64, 3), "uint8")
    assert shapes["actions"] == (VECTOR, (7,), "float64")
    assert shapes["rewards"] == (VECTOR, (1,), "float64")
    assert not any(k.startswith("next_obs") for k in shapes)
    assert info.extra["filter_keys"] == {"train": 10, "valid": 2, "20_percent": 3}
    assert info.extra["env_args"]["env_kwargs"]["robots"] == ["Panda"]
    assert info.extra["robosuite"] == {
        "env_name": "Lift", "robots": ["Panda"], "controller": "OSC_POSE", "control_freq": 20, "version": "1.4.1"
    }  # fmt: skip


def test_describe_without_the_usual_keys_or_env_args(importer, tmp_path):
    path = tmp_path / "plain.hdf5"
    with h5py.File(path, "w") as f:
        demo = f.create_group("data/demo_0")
        demo["actions"] = np.zeros((4, 2))
        demo["obs/zeta"] = np.zeros((4, 2, 3), np.float32)
        demo["obs/alpha"] = np.zeros(4)
        demo["obs/cam_image"] = np.zeros((4, 8, 8, 3), np.uint8)
        demo["obs/cam_depth"] = np.zeros((4, 8, 8, 1), np.float32)
    info = importer.describe(path)
    assert info.default_state == ("obs/alpha", "obs/zeta")
    assert info.default_views == ("obs/cam_image",)
    assert info.feature("obs/zeta").shape == (6,)
    assert info.feature("obs/cam_depth").kind == IMAGE
    assert (info.steps, info.fps, info.robot) == (0, 0.0, "")
    assert "robosuite" not in info.extra
    [episode] = importer.episodes(path, Selection(state=("alpha", "zeta"), action="actions"))
    assert episode.arrays["zeta"].shape == (4, 6) and episode.arrays["alpha"].shape == (4, 1)


def test_describe_rejects_a_file_without_data_or_with_bad_env_args(importer, tmp_path):
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        f["x"] = np.zeros(2)
    with pytest.raises(ImportSourceError, match="no 'data' group"):
        importer.describe(empty)
    broken = write_robomimic(tmp_path / "broken.hdf5", episodes=1, steps=3, cameras=())
    with h5py.File(broken, "a") as f:
        f["data"].attrs["env_args"] = "{not json"
    with pytest.raises(ImportSourceError, match="env_args"):
        importer.describe(broken)


def test_episodes_come_in_numeric_order_with_the_values_written(importer, good_file):
    episodes = list(importer.episodes(good_file, default_selection()))
    assert [e.index for e in episodes] == list(range(12))
    with h5py.File(good_file) as f:
        for number, episode in enumerate(episodes):
            demo = f[f"data/demo_{number}"]
            assert episode.problem is None and episode.instruction is None
            assert set(episode.arrays) == {*USUAL, "actions", *VIEWS}
            for key in USUAL + ("actions",):
                np.testing.assert_allclose(episode.arrays[key], demo[key], rtol=1e-6)
                assert episode.arrays[key].dtype == np.float32
            for key in VIEWS:  # as stored: neither flipped nor scaled
                np.testing.assert_array_equal(episode.arrays[key], demo[key])
            assert episode.arrays["actions"].shape == (GOOD_LENGTHS[number], 7)


def test_keys_are_accepted_with_or_without_the_obs_prefix(importer, good_file):
    selection = Selection(
        state=("robot0_eef_pos", "obs/object"), action="actions", views=("agentview_image",)
    )
    episode = next(importer.episodes(good_file, selection))
    assert set(episode.arrays) == {"robot0_eef_pos", "obs/object", "actions", "agentview_image"}
    assert episode.arrays["robot0_eef_pos"].shape == (5, 3)


def test_only_the_first_episodes_are_read(importer, good_file):
    episodes = list(importer.episodes(good_file, default_selection(episodes=3)))
    assert [len(e.arrays["actions"]) for e in episodes] == GOOD_LENGTHS[:3]


def test_frames_are_scaled_to_the_requested_size(importer, good_file):
    episode = next(importer.episodes(good_file, default_selection(image_size=(24, 32))))
    assert episode.arrays["obs/agentview_image"].shape == (5, 24, 32, 3)
    assert episode.arrays["obs/agentview_image"].dtype == np.uint8


def test_a_filter_key_selects_its_demos_in_numeric_order(importer, good_file):
    selection = Selection(state=("obs/object",), action="actions", options={"filter_key": "20_percent"})
    lengths = [len(e.arrays["actions"]) for e in importer.episodes(good_file, selection)]
    assert lengths == [GOOD_LENGTHS[1], GOOD_LENGTHS[2], GOOD_LENGTHS[11]]


def test_an_unknown_filter_key_or_option_is_an_error(importer, good_file):
    selection = Selection(state=("obs/object",), action="actions", options={"filter_key": "test"})
    with pytest.raises(ImportSourceError, match="no filter key 'test'.*20_percent, train, valid"):
        next(importer.episodes(good_file, selection))
    selection = Selection(state=("obs/object",), action="actions", options={"split": "train"})
    with pytest.raises(ImportSourceError, match="unknown option 'split'.*filter_key"):
        next(importer.episodes(good_file, selection))


def test_a_mask_naming_a_missing_demo_reports_that_episode(importer, tmp_path):
    path = write_robomimic(tmp_path / "m.hdf5", episodes=2, steps=3, cameras=(), masks={"train": [0, 7]})
    selection = Selection(state=("obs/object",), action="actions", options={"filter_key": "train"})
    first, second = importer.episodes(path, selection)
    assert first.problem is None and "demo_7" in second.problem


def test_an_unknown_key_is_an_error_listing_the_keys(importer, good_file):
    selection = Selection(state=("obs/robot0_eef_vel",), action="actions")
    with pytest.raises(ImportSourceError, match="no key 'obs/robot0_eef_vel'.*obs/object.*actions"):
        next(importer.episodes(good_file, selection))


def test_a_scalar_per_step_becomes_one_column(importer, good_file):
    selection = Selection(state=("rewards", "dones"), action="actions")
    episode = next(importer.episodes(good_file, selection))
    assert episode.arrays["rewards"].shape == (5, 1) and episode.arrays["dones"][-1, 0] == 1.0


def test_a_string_dataset_cannot_be_state(importer, bad_file):
    selection = Selection(state=("obs/note",), action="actions")
    with pytest.raises(ImportSourceError, match="obs/note is stored as \\|S8"):
        next(importer.episodes(bad_file, selection))


def test_frames_cannot_be_state_and_vectors_cannot_be_views(importer, good_file):
    with pytest.raises(ImportSourceError, match="pick it as a view"):
        next(importer.episodes(good_file, Selection(state=("obs/agentview_image",), action="actions")))
    with pytest.raises(ImportSourceError, match="a view must be uint8 RGB"):
        next(importer.episodes(good_file, Selection(state=USUAL, action="actions", views=("obs/object",))))


def test_bad_demos_are_reported_one_by_one(importer, bad_file):
    selection = Selection(state=USUAL, action="actions", views=("obs/agentview_image",))
    episodes = list(importer.episodes(bad_file, selection))
    assert [e.index for e in episodes] == [0, 1, 2, 3, 4]
    ok, nan, single, ragged, missing = episodes
    assert ok.problem is None and ok.arrays["obs/object"].shape == (6, 10)
    assert "demo_1/obs/object is not finite at step 2" in nan.problem and not nan.arrays
    assert single.problem is None and single.arrays["actions"].shape == (1, 7)
    assert single.arrays["obs/agentview_image"].shape == (1, 8, 8, 3)
    assert "demo_3/obs/object has per-step shape (12,), other demos (10,)" in ragged.problem
    assert "demo_4 has no obs/robot0_eef_quat" in missing.problem


def test_language_comes_from_episode_metadata_or_env_args(importer, tmp_path):
    env = env_args(lang="lift the cube")
    path = write_robomimic(tmp_path / "lang.hdf5", episodes=2, steps=3, cameras=(), env=env)
    with h5py.File(path, "a") as f:
        f["data/demo_1"].attrs["ep_meta"] = json.dumps({"lang": "pick up the red cube", "layout_id": 3})
    assert importer.describe(path).tasks == ("lift the cube",)
    selection = Selection(state=("obs/object",), action="actions")
    assert [e.instruction for e in importer.episodes(path, selection)] == [
        "lift the cube",
        "pick up the red cube",
    ]


def test_a_non_robosuite_env_has_no_robosuite_facts(importer, tmp_path):
    env = {"env_name": "hopper-medium-v2", "type": 2, "env_kwargs": {}}
    path = write_robomimic(tmp_path / "gym.hdf5", episodes=1, steps=3, cameras=(), env=env)
    info = importer.describe(path)
    assert "robosuite" not in info.extra and info.robot == "" and info.extra["env_name"] == "hopper-medium-v2"


def test_a_raw_robosuite_file_is_read_through_env_info(importer, tmp_path):
    """robosuite's collect_human_demonstrations.py output: demo_1.., states and actions, no obs."""
    path = tmp_path / "demo.hdf5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs.update(date="7-1-2024", time="12:00:00", repository_version="1.4.1", env="PickPlaceCan")
        data.attrs["env_info"] = json.dumps({"robots": "Panda", "control_freq": 20})
        for number in (1, 2):
            data[f"demo_{number}/states"] = np.zeros((5, 40))
            data[f"demo_{number}/actions"] = np.zeros((5, 7))
            data[f"demo_{number}"].attrs["model_file"] = "<mujoco/>"
    info = importer.describe(path)
    assert (info.robot, info.fps, info.steps, info.default_state) == ("Panda", 20.0, 0, ())
    assert info.extra["robosuite"] == {"env_name": "PickPlaceCan", "robots": ["Panda"], "control_freq": 20}
    episodes = list(importer.episodes(path, Selection(state=("states",), action="actions")))
    assert [e.arrays["states"].shape for e in episodes] == [(5, 40), (5, 40)]


def test_no_state_imports_a_state_free_spec(importer, good_file, tmp_path):
    from hpt_kit.data.importing import ImportOptions, import_dataset
    from hpt_kit.data.store import Dataset

    ds = Dataset(import_dataset(importer, str(good_file), tmp_path / "n.zarr", ImportOptions(state=(), episodes=2, image_size=16, text_encoder="none")))
    assert ds.spec.observation.state_dim == 0 and "state" not in [s.modality for s in ds.spec.stems]
    assert ds.episode(1)["state"].shape == (GOOD_LENGTHS[1], 0) and ds.episode(1)["image"].shape[1:] == (2, 16, 16, 3)
