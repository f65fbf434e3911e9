"""``[train.augment]``: torchvision v2 transforms on training image batches, per sample, consistent
over a sample's history and views, drawn from the run's generator (exact resume), off for validation."""

import dataclasses

import numpy as np
import pytest
import torch

from hpt_kit.core.recipe import AugmentSection, RecipeError, parse_recipe
from hpt_kit.train.augment import build_augment
from hpt_kit.train.loop import train
from hpt_kit.weights.checkpoint import resolve_checkpoint
from tests.train.test_loop import _image_recipe, camera_registry  # noqa: F401 - the fixture


def frames(batch=4, history=2, views=2, size=16):
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (batch, 1, views, size, size, 3), dtype=np.uint8)
    return torch.from_numpy(np.repeat(one, history, axis=1))  # each sample: the same frame at every step


def test_each_sample_draws_its_own_parameters_shared_by_its_steps_and_views():
    augment = build_augment(AugmentSection(crop_scale=0.5, brightness=0.5, rotation=10))
    images = frames()
    views_equal = images.clone()
    views_equal[:, :, 1] = views_equal[:, :, 0]
    out = augment(views_equal, np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out[:, 0], out[:, 1])  # the same transform at every history step
    assert torch.equal(out[:, :, 0], out[:, :, 1])  # and for every view
    assert not torch.equal(out, views_equal)
    first = views_equal[0:1].expand(4, -1, -1, -1, -1, -1).contiguous()
    spread = augment(first, np.random.default_rng(1))
    assert len({spread[i].float().mean().item() for i in range(4)}) == 4  # per-sample parameters


def test_the_same_generator_state_gives_the_same_batch_and_leaves_torch_alone():
    augment = build_augment(AugmentSection(crop_scale=0.7, hue=0.1))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = augment(frames(), np.random.default_rng(3))
    b = augment(frames(), np.random.default_rng(3))
    assert torch.equal(a, b) and not torch.equal(a, augment(frames(), np.random.default_rng(4)))
    assert torch.equal(torch.get_rng_state(), before)


def test_off_by_default_and_checked():
    assert build_augment(AugmentSection()) is None
    with pytest.raises(RecipeError, match=r"train.augment.flip: unknown key"):
        parse_recipe({"datasets": [{"embodiment": "a"}], "train": {"augment": {"flip": True}}}, "r.toml")
    with pytest.raises(RecipeError, match=r"crop_scale must be in \(0, 1\]"):
        parse_recipe({"datasets": [{"embodiment": "a"}], "train": {"augment": {"crop_scale": 0}}}, "r.toml")


def test_an_augmented_image_run_resumes_exactly(camera_registry, tmp_path):  # noqa: F811
    recipe = _image_recipe(steps=6, stem_options={"image": {"train_encoder": False}})
    train_section = dataclasses.replace(
        recipe.train, checkpoint_every=3, augment=AugmentSection(crop_scale=0.6, brightness=0.4, rotation=5)
    )
    recipe = dataclasses.replace(recipe, train=train_section)
    plain = dataclasses.replace(recipe, train=dataclasses.replace(train_section, augment=AugmentSection()))
    train(recipe, tmp_path / "straight", camera_registry)
    train(plain, tmp_path / "plain", camera_registry)

    class Stop(Exception):
        pass

    def stop_at_5(record):
        if record.get("step") == 5 and "loss" in record:
            raise Stop

    with pytest.raises(Stop):
        train(recipe, tmp_path / "resumed", camera_registry, on_log=stop_at_5)
    train(recipe, tmp_path / "resumed", camera_registry, resume=True)
    a = resolve_checkpoint(tmp_path / "straight").tensors()
    b = resolve_checkpoint(tmp_path / "resumed").tensors()
    c = resolve_checkpoint(tmp_path / "plain").tensors()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("stems."))  # augmentation changed training
