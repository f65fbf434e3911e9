"""An optional camera (``Embodiment.camera_optional``): rendered only when a conversion asks for it,
and a dataset converted without it is a state-only dataset that trains and evaluates."""

from __future__ import annotations

import dataclasses

import pytest

import hpt_kit
from hpt_kit.contract import check_embodiment
from hpt_kit.core.recipe import parse_recipe
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import SpecError
from hpt_kit.data.convert import check_dataset, convert
from hpt_kit.data.store import Dataset
from hpt_kit.models.hpt import HPT
from hpt_kit.policy import Policy
from hpt_kit.train.loop import train
from hpt_kit.weights.checkpoint import resolve_checkpoint
from tests.conftest import make_image_toy


def optional_camera_toy(optional: bool = True):
    cam = make_image_toy("toy-cam", size=16)

    def convert_dataset(request):
        for ep in cam.convert_dataset(request):
            yield ep if request.render else {k: v for k, v in ep.items() if k != "image"}

    return dataclasses.replace(cam, convert_dataset=convert_dataset, camera_optional=optional)


def test_the_camera_is_stored_only_when_rendered(tmp_path):
    toy = optional_camera_toy()
    plain = Dataset(convert(toy, tmp_path / "plain.zarr", episodes=3))
    assert plain.spec.observation.image is None and [s.modality for s in plain.spec.stems] == ["state"]
    assert plain.fields() == ["state", "action"]
    framed = Dataset(convert(toy, tmp_path / "framed.zarr", episodes=3, render=True))
    assert framed.load("image").shape[1:] == (1, 16, 16, 3)
    assert [s.modality for s in framed.spec.stems] == ["state", "image"]
    for ds in (plain, framed):
        check_dataset(toy, ds)  # both layouts are this plugin's: no drift
    report = check_embodiment(toy)
    assert "image" not in report.episodes[0] and report.rendered[0]["image"].dtype.name == "uint8"


def test_without_the_flag_a_declared_camera_is_mandatory(tmp_path):
    with pytest.raises(SpecError, match=r"missing field\(s\) \['image'\]"):
        convert(optional_camera_toy(optional=False), tmp_path / "x.zarr", episodes=1)
    with pytest.raises(SpecError, match="camera_optional is set but observation.image declares no camera"):
        hpt_kit.core.spec.validate_spec(dataclasses.replace(optional_camera_toy(), observation=hpt_kit.ObservationSpec(3)))


def test_a_run_on_the_unrendered_dataset_trains_a_policy_that_needs_no_frames(tmp_path):
    class Plugin:
        @staticmethod
        @hpt_kit.hookimpl
        def hpt_register_embodiments(registry):
            registry.add(optional_camera_toy())

    registry = load_registry(load_entrypoints=False, extra_plugins=[("cam", Plugin)])
    recipe = parse_recipe({
        "trunk": {"preset": "tiny"},
        "datasets": [{"embodiment": "toy-cam", "episodes": 4}],
        "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "val_batches": 1},
    }, "test")
    train(recipe, tmp_path / "run", registry)
    ckpt = resolve_checkpoint(tmp_path / "run")
    assert ckpt.specs["toy-cam"].observation.image is None
    assert Policy(HPT.from_checkpoint(ckpt, registry), "toy-cam").needs_images is False
