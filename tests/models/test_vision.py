"""The ResNet image encoder: feature tokens, weights by name (file, ImageNet, none), provenance."""

import urllib.error

import pytest
import torch
from safetensors.torch import save_file

from hpt_kit.models.vision import (
    EncoderWeightsError,
    ResNetEncoder,
    encode_frames,
    feature_grid,
    frozen_encoder,
)


def _frames(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)


def _torchvision_state(seed):
    """A full torchvision ResNet-18 state dict (classifier included), as a downloaded file holds."""
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_tokens_are_the_last_feature_map_cells():
    enc = ResNetEncoder("resnet18", weights=None).eval()
    assert enc(_frames(2, 64)).shape == (2, 4, 512)  # 2x2 cells at 64x64
    assert enc.tokens(64, 64) == 4 and enc.tokens(32, 32) == 1
    assert [feature_grid(n) for n in (32, 33, 64, 224)] == [1, 2, 2, 7]
    resized = ResNetEncoder("resnet18", weights=None, resize=224).eval()
    assert resized(_frames(1, 64)).shape == (1, 49, 512) and resized.tokens(64, 64) == 49
    with pytest.raises(TypeError, match="uint8"):
        enc(_frames(1).float())


def test_no_weights_is_a_fixed_initialisation_whatever_the_global_seed():
    torch.manual_seed(1)
    a = ResNetEncoder("resnet18", weights=None)
    torch.manual_seed(2)
    b = ResNetEncoder("resnet18", weights="none")
    assert a.digest() == b.digest()
    assert a.describe().weights == "none"


def test_a_weights_file_loads_with_or_without_the_classifier(tmp_path):
    state = _torchvision_state(seed=3)
    pth = tmp_path / "resnet18.pth"
    torch.save(state, pth)
    backbone_only = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("fc.")}, str(backbone_only))
    from_pth = ResNetEncoder("resnet18", weights=str(pth))
    from_st = ResNetEncoder("resnet18", weights=str(backbone_only))
    torch.testing.assert_close(from_pth.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(from_st.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert from_pth.digest() == from_st.digest() != ResNetEncoder("resnet18", weights=None).digest()
    assert from_pth.describe().weights == str(pth.resolve())


def test_a_mismatched_weights_file_names_the_file_and_the_keys(tmp_path):
    import torchvision

    wrong_arch = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong_arch)
    with pytest.raises(EncoderWeightsError) as err:
        ResNetEncoder("resnet18", weights=str(wrong_arch))
    assert str(wrong_arch) in str(err.value) and "unexpected keys" in str(err.value)
    assert "layer1.2.conv1.weight" in str(err.value)  # a block resnet18 does not have

    state = _torchvision_state(seed=0)
    state["conv1.weight"] = state["conv1.weight"][:, :1]  # a one-channel stem
    del state["layer4.1.bn2.bias"]
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(EncoderWeightsError, match=r"missing keys \['layer4.1.bn2.bias'\].*conv1.weight"):
        ResNetEncoder("resnet18", weights=str(bad))
    with pytest.raises(EncoderWeightsError, match="does not exist"):
        ResNetEncoder("resnet18", weights=str(tmp_path / "nowhere.pth"))


def test_imagenet_weights_go_through_torchvision_and_a_failed_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: torchvision must download
    asked = []

    def offline(url, dst, *args, **kwargs):
        asked.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(EncoderWeightsError) as err:
        ResNetEncoder("resnet18", weights="imagenet")
    assert asked == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    message = str(err.value)
    assert "ResNet18_Weights.IMAGENET1K_V1" in message and "URLError" in message
    assert 'weights = "/path/to/resnet18-f37072fd.pth"' in message and ".safetensors" in message
    # With pretrained=False (a checkpoint about to be loaded) nothing is fetched.
    ResNetEncoder("resnet18", weights="imagenet", pretrained=False)
    assert len(asked) == 1


def test_frozen_encoder_rebuilds_the_recorded_network_or_refuses(tmp_path):
    state = _torchvision_state(seed=4)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    spec = ResNetEncoder("resnet18", weights=str(path)).describe()
    enc = frozen_encoder(spec)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    frames = _frames(5)
    features = encode_frames(enc, frames.reshape(5, 1, 64, 64, 3), batch=2)  # (T, V, N, C)
    assert features.shape == (5, 1, 4, 512)
    torch.testing.assert_close(features[:, 0], enc(frames), atol=1e-5, rtol=1e-5)
    torch.save(_torchvision_state(seed=5), path)  # the file changed since the features were computed
    with pytest.raises(EncoderWeightsError, match="not the one that computed the training features"):
        frozen_encoder(spec)
