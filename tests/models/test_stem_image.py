"""The ``resnet`` stem: end-to-end and precomputed modes, camera views, options, training."""

import numpy as np
import pytest
import torch

from hpt_kit.core.presets import trunk_config
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import StemSpec
from hpt_kit.models.hpt import HPT
from hpt_kit.models.stem_image import ResNetStem, feature_spec, precomputed_stems
from hpt_kit.models.vision import ResNetEncoder, encode_frames
from tests.conftest import image_spec, image_stats

WIDTH = 32


def _frames(B, H, V, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, H, V, size, size, 3), dtype=torch.uint8, generator=g)


def _stem(modality, step_shape, horizon=1, **options):
    spec = StemSpec(modality, kind="resnet", hidden=(64,), num_tokens=4, num_heads=4, options=options)
    return ResNetStem(spec, step_shape, WIDTH, horizon)


@pytest.mark.parametrize("views", ["shared", "independent"])
def test_precomputed_and_end_to_end_give_the_same_tokens(views, tmp_path):
    import torchvision

    torch.manual_seed(7)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    V, H = 2, 2
    e2e = _stem("image", (V, 64, 64, 3), H, weights=str(weights), views=views, train_encoder=False)
    frozen = ResNetEncoder("resnet18", str(weights)).eval()
    fspec = feature_spec(frozen, ("a", "b"), 64, 64)
    assert (fspec.tokens, fspec.channels) == (4, 512)
    pre = _stem("image_features", (V, fspec.tokens, fspec.channels), H, views=views)
    assert len(pre.encoders) == 0
    pre.tokenizers.load_state_dict(e2e.tokenizers.state_dict())
    e2e.train()  # a frozen encoder stays in eval mode: its batch-norm uses the loaded statistics
    assert not any(enc.training for enc in e2e.encoders)

    frames = _frames(3, H, V)
    features = encode_frames(frozen, frames)  # what conversion stores: (B, H, V, N, C)
    with torch.no_grad():
        tokens_e2e = e2e(frames)
        tokens_pre = pre(features)
    assert tokens_e2e.shape == tokens_pre.shape == (3, V * 4, WIDTH)
    torch.testing.assert_close(tokens_e2e, tokens_pre, atol=1e-5, rtol=1e-5)
    # The tokens are per view, in view order: changing one camera's frames changes only its tokens.
    other = frames.clone()
    other[:, :, 1] = 255 - other[:, :, 1]
    with torch.no_grad():
        changed = e2e(other)
    torch.testing.assert_close(changed[:, :4], tokens_e2e[:, :4])
    assert not torch.allclose(changed[:, 4:], tokens_e2e[:, 4:], atol=1e-3)


def test_views_get_their_own_tokens_and_independent_encoders_multiply_the_parameters():
    counts = {}
    for views in ("shared", "independent"):
        for V in (1, 3):
            stem = _stem("image", (V, 32, 32, 3), weights=None, views=views).eval()
            assert stem.tokens_out == V * 4
            assert stem(_frames(2, 1, V, size=32)).shape == (2, V * 4, WIDTH)
            counts[views, V] = sum(p.numel() for p in stem.parameters())
            assert len(stem.encoders) == len(stem.tokenizers) == (V if views == "independent" else 1)
    assert counts["shared", 3] == counts["shared", 1] == counts["independent", 1]
    assert counts["independent", 3] == 3 * counts["shared", 3]
    assert counts["shared", 1] > 11_000_000  # the ResNet-18 backbone is inside (11.2M without its classifier)
    pre = _stem("image_features", (3, 4, 512), views="independent")
    assert sum(p.numel() for p in pre.parameters()) == 3 * sum(
        p.numel() for p in _stem("image_features", (3, 4, 512)).parameters()
    )


def test_options_are_checked_by_name_type_and_value():
    with pytest.raises(ValueError) as err:
        _stem("image", (1, 32, 32, 3), weights=None, view="shared")
    assert str(err.value) == (
        "stem 'resnet': unknown option 'view'; known: arch, weights, views, train_encoder, resize"
    )
    with pytest.raises(ValueError, match="stem 'resnet': option 'train_encoder' must be bool, got 'no'"):
        _stem("image", (1, 32, 32, 3), weights=None, train_encoder="no")
    with pytest.raises(ValueError, match="option 'weights' must be str | None"):
        _stem("image", (1, 32, 32, 3), weights=3)
    with pytest.raises(ValueError, match="stem 'resnet': option 'views' must be one of shared, independent"):
        _stem("image", (1, 32, 32, 3), weights=None, views="each")
    with pytest.raises(ValueError, match="unknown image encoder 'resnet19'; known: resnet18, resnet34"):
        _stem("image", (1, 32, 32, 3), weights=None, arch="resnet19")
    with pytest.raises(ValueError, match="cannot train its encoder"):
        _stem("image_features", (1, 4, 512), train_encoder=True)
    with pytest.raises(ValueError, match="not 'state'"):
        _stem("state", (7,))


def test_precomputed_stems_rewrite_only_resnet_image_stems():
    encoder = ResNetEncoder("resnet18", None).describe()
    stems = (
        StemSpec("state"),
        StemSpec("image", kind="resnet", num_tokens=8, options={"views": "independent"}),
    )
    state, image = precomputed_stems(stems, encoder)
    assert state == stems[0]
    assert (image.modality, image.kind, image.num_tokens) == ("image_features", "resnet", 8)
    assert image.options == {
        "views": "independent",
        "arch": "resnet18",
        "weights": "none",
        "resize": 0,
        "train_encoder": False,
    }
    added = precomputed_stems((StemSpec("state"),), encoder)  # nobody read the frames: a stem is added
    assert [s.modality for s in added] == ["state", "image_features"]


def test_hpt_counts_one_set_of_tokens_per_view():
    spec = image_spec()
    model = HPT(
        trunk_config("tiny"),
        {spec.name: spec},
        {spec.name: image_stats()},
        load_registry(load_entrypoints=False),
    )
    batch = {"state": torch.randn(2, 2, 4), "image": _frames(2, 2, 2, size=32)}
    tokens = model.tokens(spec.name, batch)
    assert tokens.shape == (2, 4 + 2 * 4, 32) and model.pos_table.shape[1] == 12


def test_end_to_end_training_lowers_the_loss_and_moves_the_encoder():
    """A few AdamW steps on one batch whose actions depend only on the image."""
    torch.manual_seed(0)
    spec = image_spec(views=("front",), horizon=1)
    model = HPT(
        trunk_config("tiny"),
        {spec.name: spec},
        {spec.name: image_stats()},
        load_registry(load_entrypoints=False),
    )
    frames = _frames(8, 1, 1, size=32, seed=1)
    frames[:4] //= 2  # two groups of frames, dark and bright
    brightness = frames.float().mean(dim=(1, 2, 3, 4, 5)) / 127.5 - 1  # (B,) in [-1, 1]
    batch = {
        "state": torch.zeros(8, 1, 4),  # the state says nothing: only the image tells the actions apart
        "image": frames,
        "action": brightness[:, None, None].expand(8, 3, 2).clone(),
    }
    encoder = model.stems[spec.name]["image"].encoders[0]
    before = encoder.conv1.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(6):
        loss = model.loss(spec.name, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses
    # Below the best constant chunk's loss: the prediction depends on the frames.
    constant = torch.nn.functional.smooth_l1_loss(
        batch["action"], batch["action"].mean().expand_as(batch["action"])
    )
    assert losses[-1] < 0.7 * constant.item(), (losses, constant.item())
    assert not torch.equal(before, encoder.conv1.weight)  # trained end to end
    assert encoder.conv1.weight.grad is not None
