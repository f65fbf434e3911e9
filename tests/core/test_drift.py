"""Spec drift: a stored spec compared field by field with the plugin's current one."""

from __future__ import annotations

import dataclasses

import pytest

from hpt_kit.core.drift import SpecDriftError, check_drift, spec_drift
from hpt_kit.core.spec import ImageEncoderSpec, ImageFeatureSpec, LanguageSpec, spec_from_dict
from hpt_kit.data.convert import convert
from tests.conftest import make_image_toy, make_toy


def with_state(emb, dim):
    return dataclasses.replace(emb, observation=dataclasses.replace(emb.observation, state_dim=dim))


def test_identical_and_run_level_changes_are_no_drift(toy):
    stored = spec_from_dict(toy.to_dict())
    assert spec_drift(toy, stored) == []
    # Horizons, head and action bounds shape no stored array: a recipe may change them per run.
    run = dataclasses.replace(stored, observation_horizon=5, head=dataclasses.replace(stored.head, action_horizon=9))
    assert spec_drift(toy, run) == []


def test_each_changed_field_is_named_with_both_values(toy):
    stored = spec_from_dict(toy.to_dict())
    changed = dataclasses.replace(
        with_state(toy, 14),
        action=dataclasses.replace(toy.action, control_hz=20.0),
    )
    assert [d[0] for d in spec_drift(changed, stored)] == ["state_dim", "action.control_hz"]
    with pytest.raises(SpecDriftError) as err:
        check_drift(changed, stored, "dataset /x.zarr", "convert it again")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("embodiment 'toy' changed since dataset /x.zarr was made: ")
    assert "state_dim 14 in the plugin, 3 in dataset /x.zarr" in message
    assert "action.control_hz 20 in the plugin, 10 in dataset /x.zarr" in message
    assert message.endswith("; convert it again")


def test_camera_and_language_changes_are_drift():
    cam = make_image_toy()
    stored = spec_from_dict(cam.to_dict())
    bigger = dataclasses.replace(cam, observation=dataclasses.replace(cam.observation, image=dataclasses.replace(cam.observation.image, height=64)))
    assert spec_drift(bigger, stored)[0][0] == "observation.image"
    talking = dataclasses.replace(cam, observation=dataclasses.replace(cam.observation, language=LanguageSpec(1, 64, "hash-ngram")))
    assert [d[0] for d in spec_drift(talking, stored)] == ["observation.language"]


def test_features_the_kit_computed_are_not_the_plugins():
    cam = make_image_toy()
    encoder = ImageEncoderSpec("resnet18", "none", "0" * 64)
    obs = dataclasses.replace(cam.observation, image_features=ImageFeatureSpec(("top",), 4, 512, encoder))
    stored = dataclasses.replace(spec_from_dict(cam.to_dict()), observation=obs)
    assert spec_drift(cam, stored) == []
    plugin_made = dataclasses.replace(obs, image_features=ImageFeatureSpec(("top",), 4, 512))
    assert [d[0] for d in spec_drift(cam, dataclasses.replace(stored, observation=plugin_made))] == ["observation.image_features"]


def test_convert_onto_a_dataset_of_an_older_layout_names_the_fields(tmp_path):
    toy = make_toy()
    path = convert(toy, tmp_path / "toy.zarr", episodes=2)
    convert(toy, path, episodes=2, overwrite=True)  # the same layout: replaced as before
    with pytest.raises(FileExistsError):
        convert(toy, path, episodes=2)  # unchanged plugin: only "already exists"
    with pytest.raises(SpecDriftError, match=r"state_dim 4 in the plugin, 3 in dataset .*toy\.zarr; convert it again"):
        convert(with_state(toy, 4), path, episodes=2)
