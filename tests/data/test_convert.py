"""Conversion with camera frames encoded once (``convert --image-encoder``): features, provenance, and a
policy trained on them driving a rollout that renders."""

import dataclasses
import json
import subprocess

import numpy as np
import pytest
import torch

from hpt_kit.core.presets import trunk_config
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import ConvertRequest, RolloutRequest, SpecError
from hpt_kit.data.convert import convert
from hpt_kit.data.store import Dataset
from hpt_kit.models.hpt import HPT
from hpt_kit.models.vision import ResNetEncoder, encode_frames
from hpt_kit.policy import Policy
from tests.conftest import HPT_KIT, make_image_toy


@pytest.fixture(scope="module")
def arm_rgb():
    pytest.importorskip("hpt_kit_mujoco")
    return load_registry().embodiment("mujoco-arm3-rgb")


def test_rendered_frames_are_encoded_into_the_store_with_their_encoder(arm_rgb, tmp_path):
    path = convert(
        arm_rgb,
        tmp_path / "arm.zarr",
        episodes=2,
        seed=0,
        image_encoder="resnet18",
        image_encoder_weights="none",
    )
    ds = Dataset(path)
    frames, features = ds.load("image"), ds.load("image_features")
    assert frames.dtype == np.uint8 and frames.shape == (ds.num_steps, 1, 64, 64, 3)
    assert features.dtype == np.float32 and features.shape == (ds.num_steps, 1, 4, 512)  # 2x2 cells of 512
    assert frames.std() > 5  # rendered pictures, not blank frames

    encoder = ResNetEncoder("resnet18", weights=None).eval()
    feats = ds.spec.observation.image_features
    assert (feats.views, feats.tokens, feats.channels) == (("front",), 4, 512)
    assert feats.encoder.arch == "resnet18" and feats.encoder.weights == "none" and feats.encoder.resize == 0
    assert feats.encoder.sha256 == encoder.digest()
    np.testing.assert_allclose(features, encode_frames(encoder, torch.from_numpy(frames)).numpy(), atol=1e-5)
    # The stored spec says where the features came from, in JSON, and its image stem now reads them.
    spec = ds.attrs["spec"]
    assert (
        json.loads(json.dumps(spec))["observation"]["image_features"]["encoder"]["sha256"] == encoder.digest()
    )
    assert [(s.modality, s.kind) for s in ds.spec.stems] == [("state", "mlp"), ("image_features", "resnet")]
    assert ds.spec.stems[1].options["train_encoder"] is False
    assert ds.notes["expert_success_rate"] == 1.0  # the plugin's own notes are kept

    # A policy trained on the features drives a rollout that renders frames: it encodes them itself.
    torch.manual_seed(0)
    model = HPT(
        trunk_config("tiny"), {ds.name: ds.spec}, {ds.name: ds.stats}, load_registry(load_entrypoints=False)
    )
    policy = Policy(model, ds.name)
    assert policy.needs_images
    seen = []
    act = policy.act
    policy.act = lambda obs: seen.append(sorted(obs)) or act(obs)
    result = arm_rgb.rollout(policy, RolloutRequest(episodes=1, seed=0, render=policy.needs_images))
    assert len(result.successes) == 1 and seen and seen[0] == ["image", "state"]


def test_an_encoder_needs_frames_to_encode(toy, tmp_path):
    with pytest.raises(SpecError, match="has no camera images"):
        convert(
            toy, tmp_path / "toy.zarr", episodes=1, image_encoder="resnet18", image_encoder_weights="none"
        )
    assert not (tmp_path / "toy.zarr").exists()


def test_a_bad_frame_is_reported_by_field_before_encoding(tmp_path):
    toy = make_image_toy()
    original = toy.convert_dataset

    def float_frames(request):
        for ep in original(request):
            yield {**ep, "image": ep["image"].astype(np.float32)}

    broken = dataclasses.replace(toy, convert_dataset=float_frames)
    with pytest.raises(SpecError, match=r"episode 0, field 'image': dtype float32, expected uint8"):
        convert(
            broken, tmp_path / "t.zarr", episodes=1, image_encoder="resnet18", image_encoder_weights="none"
        )
    assert list(toy.convert_dataset(ConvertRequest(episodes=1, seed=0)))  # the plain converter is fine


def test_the_command_line_option_records_the_encoder(arm_rgb, tmp_path):
    out = subprocess.run(
        [
            HPT_KIT,
            "convert",
            "mujoco-arm3-rgb",
            "--episodes",
            "1",
            "--out",
            str(tmp_path / "a.zarr"),
            "--image-encoder",
            "resnet18",
            "--image-encoder-weights",
            "none",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["image_encoder"]["arch"] == "resnet18" and len(summary["image_encoder"]["sha256"]) == 64
    import typer

    from hpt_kit.cli.data import convert_command

    with pytest.raises(typer.BadParameter, match="unknown image encoder 'vgg16'; known: resnet18"):
        convert_command("mujoco-arm3-rgb", image_encoder="vgg16")
