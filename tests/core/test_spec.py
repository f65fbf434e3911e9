"""The embodiment spec's stored form: what datasets and checkpoints hold must read back unchanged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hpt_kit.core.spec import (
    ActionSpec,
    Embodiment,
    EmbodimentData,
    HeadSpec,
    ImageEncoderSpec,
    ObservationSpec,
    SpecError,
    StemSpec,
    spec_from_dict,
    spec_problems,
    spec_to_dict,
    validate_spec,
)
from tests.conftest import image_spec, make_toy

# Specs exactly as the kit stored them before the converter was generic: the `spec` attribute of a
# `mujoco-arm3-rgb` dataset converted with `--image-encoder resnet18 --image-encoder-weights none`,
# and `embodiments.metaworld-lang.spec` of a checkpoint.json of a 2-step run.
STORED = json.loads((Path(__file__).parent / "data" / "stored_specs.json").read_text())


@pytest.mark.parametrize("where", sorted(STORED))
def test_stored_specs_round_trip_to_the_identical_json(where):
    stored = STORED[where]
    spec = spec_from_dict(stored)
    assert type(spec) is EmbodimentData
    assert json.dumps(spec.to_dict()) == json.dumps(stored)  # same keys, order, values and number types


def test_stored_specs_read_as_typed_dataclasses():
    rgb = spec_from_dict(STORED["dataset"])
    assert rgb.observation.image.views == ("front",) and rgb.action.low == (-1.0, -1.0, -1.0)
    assert rgb.observation.image_features.encoder == ImageEncoderSpec("resnet18", "none", rgb.observation.image_features.encoder.sha256)
    assert rgb.stems[1].options == {"arch": "resnet18", "weights": "none", "resize": 0, "train_encoder": False}
    assert rgb.head.hidden == (256, 256) and rgb.observation.language is None
    lang = spec_from_dict(STORED["checkpoint"])
    assert lang.observation.language.encoder == "all-minilm-l6-v2" and lang.action_horizon == 4


def test_an_embodiment_is_its_data_plus_callables():
    toy = make_toy()
    assert isinstance(toy, EmbodimentData)
    data = spec_from_dict(toy.to_dict())
    assert toy.to_dict() == spec_to_dict(toy) == data.to_dict()
    assert "rollout" not in toy.to_dict() and "convert_dataset" not in toy.to_dict()
    assert [f.name for f in dataclasses.fields(EmbodimentData)] == list(toy.to_dict())
    # Every data field of the embodiment survives the trip (nothing copied by hand to forget).
    assert {f.name: getattr(toy, f.name) for f in dataclasses.fields(EmbodimentData)} == data.__dict__


def test_the_plugin_facing_constructor_is_unchanged():
    def convert(request):
        yield from ()

    emb = Embodiment(
        name="kw",
        observation=ObservationSpec(state_dim=2),
        action=ActionSpec(dim=1, low=(-1.0,), high=(1.0,), control_hz=10.0),
        convert_dataset=convert,
        rollout=lambda controller, request: None,
    )
    assert emb.stems == (StemSpec("state"),) and emb.head == HeadSpec() and emb.expert_rollout is None
    assert emb.observation_horizon == 1 and emb.action_horizon == 4
    validate_spec(emb)
    with pytest.raises(TypeError, match="rollout"):
        Embodiment(name="kw", observation=emb.observation, action=emb.action, convert_dataset=convert)


def test_validation_still_wants_an_embodiment_with_callables():
    data = spec_from_dict(make_toy().to_dict())
    assert spec_problems(data) == ["expected an hpt_kit.Embodiment, got EmbodimentData"]
    with pytest.raises(SpecError, match="rollout must be callable"):
        validate_spec(dataclasses.replace(make_toy(), rollout=None))


def test_older_specs_take_the_defaults_of_keys_added_since():
    stored = json.loads(json.dumps(STORED["dataset"]))
    del stored["stems"][0]["options"], stored["observation"]["image_features"]["encoder"]["resize"]
    del stored["max_episode_steps"], stored["description"]
    spec = spec_from_dict(stored)
    assert spec.stems[0].options == {} and spec.observation.image_features.encoder.resize == 0
    assert spec.max_episode_steps == 0 and spec.description == ""


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["observation"].update(state_dim="18"), r"spec\.observation\.state_dim: must be an integer"),
        (lambda d: d["stems"][0].update(widths=[1]), r"spec\.stems\[0\]\.widths: unknown key"),
        (lambda d: d["action"].pop("dim"), r"spec\.action\.dim: required key is missing"),
        (lambda d: d["observation"].update(image=[64]), r"spec\.observation\.image: expected a table"),
    ],
)
def test_a_damaged_spec_is_a_spec_error_naming_the_key(change, message):
    stored = json.loads(json.dumps(STORED["dataset"]))
    change(stored)
    with pytest.raises(SpecError, match=message):
        spec_from_dict(stored)


def test_bare_specs_round_trip():
    spec = image_spec(train_encoder=False)  # options hold a None (weights): JSON null
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
