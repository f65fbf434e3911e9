"""Image encoders: a torchvision ResNet cut before its pooling, turning camera frames into feature tokens.

:class:`ResNetEncoder` maps uint8 frames (N, H, W, 3) to (N, h*w, C): one token per cell of the last
feature map (7x7x512 for a ResNet-18 at 224x224, 2x2x512 at 64x64). It normalises with the ImageNet
mean and standard deviation inside, so callers hand it frames as rendered.

It serves both image modes: inside the ``resnet`` stem (``stem_image.py``) it is trained end to end;
at conversion time (``hpt_kit.data.convert``) it computes ``image_features`` once, frozen, and its
:class:`~hpt_kit.core.spec.ImageEncoderSpec` (name, weights, sha256) is stored with the dataset so a
:class:`~hpt_kit.policy.Policy` can rebuild the same network at inference.

Weights are chosen by name: ``"imagenet"`` (torchvision's default ImageNet weights for the
architecture, downloaded through its weights enum), ``None``/``"none"`` (a fixed seeded random
initialisation, reproducible so frozen features can be recomputed) or the path of a ``.pth`` or
``.safetensors`` state dict, loaded strictly. torchvision is imported only when an encoder is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hpt_kit.core.spec import IMAGE_ENCODERS, ImageEncoderSpec, check_arch
from hpt_kit.weights.tensors import CheckpointError, load_strict, safe_torch_load, tensor_digest

ARCHS = IMAGE_ENCODERS
IMAGENET = "imagenet"
NO_WEIGHTS = "none"
INIT_SEED = 0  # the seed of weights = "none": the same network every time it is built
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The torchvision ResNet modules kept: everything before the global pooling and the classifier.
BACKBONE = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

class EncoderWeightsError(ValueError):
    """Encoder weights that cannot be had: a download that failed, a missing or mismatched file."""


def normalize_weights(weights: str | None) -> str:
    """The canonical name of a weights choice: "imagenet", "none" or an absolute file path."""
    if weights is None or weights == NO_WEIGHTS:
        return NO_WEIGHTS
    if weights == IMAGENET:
        return IMAGENET
    return str(Path(weights).expanduser().resolve())


def feature_grid(size: int) -> int:
    """Side of a ResNet's last feature map for an input side of ``size`` pixels: the stem convolution,
    the max-pool and layers 2-4 each halve it, rounding up (224 -> 7, 64 -> 2)."""
    for _ in range(5):
        size = math.ceil(size / 2)
    return size


def _torchvision():
    try:
        import torchvision
    except ImportError as exc:
        raise ImportError("image encoders need torchvision: pip install 'hpt-kit[vision]'") from exc
    return torchvision


def _read_state_dict(path: Path, arch: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise EncoderWeightsError(f"{arch} weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad file
            raise EncoderWeightsError(
                f"{arch} weights file {path}: not a readable safetensors file ({exc})"
            ) from None
    try:
        state = safe_torch_load(path)
    except CheckpointError as exc:
        raise EncoderWeightsError(f"{arch} weights file {exc}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderWeightsError(
            f"{arch} weights file {path}: expected a state dict of tensors (name -> tensor)"
        )
    return dict(state)


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for ``arch``, through its weights enum (downloaded into
    torch's hub cache on first use)."""
    enum = _torchvision().models.get_model_weights(arch).DEFAULT
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - network and cache failures come in many types
        from torch.hub import get_dir

        name = enum.url.rsplit("/", 1)[-1]
        raise EncoderWeightsError(
            f"{arch}: could not fetch the ImageNet weights (torchvision {enum!r} from {enum.url}: "
            f"{type(exc).__name__}: {exc}). Without network access here, fetch that file elsewhere and set the "
            f'option weights = "/path/to/{name}" (any .pth or .safetensors {arch} state dict), '
            f"or place it in torch's cache as {Path(get_dir()) / 'checkpoints' / name}"
        ) from exc


class ResNetEncoder(nn.Module):
    """uint8 frames (N, H, W, 3) -> feature tokens (N, h*w, channels), h = feature_grid(H).

    The submodules keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ...), so a torchvision
    state dict loads as it is; its classifier (``fc.*``) may be present in a weights file or not and
    is dropped. ``resize`` > 0 resizes frames to resize x resize (bilinear, antialiased) first.
    ``pretrained=False`` keeps the seeded initialisation without fetching ``weights``: for a network
    whose every tensor is loaded from a checkpoint right after (no download, no weights file needed).
    """

    def __init__(
        self, arch: str = "resnet18", weights: str | None = IMAGENET, resize: int = 0, pretrained: bool = True
    ):
        super().__init__()
        check_arch(arch)
        if resize < 0:
            raise ValueError(f"resize must be >= 0 (0 = as rendered), got {resize}")
        self.arch = arch
        self.weights = normalize_weights(weights)
        self.resize = resize
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            net = _torchvision().models.get_model(arch, weights=None)
        self.channels: int = net.fc.in_features
        if pretrained and self.weights != NO_WEIGHTS:
            if self.weights == IMAGENET:
                state = _imagenet_state_dict(arch)
            else:
                state = _read_state_dict(Path(self.weights), arch)
            self._load(net, state)
        for name in BACKBONE:
            self.add_module(name, getattr(net, name))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def _load(self, net: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
        state = dict(state)
        if not any(k.startswith("fc.") for k in state):  # a backbone-only file: keep the classifier as built
            state.update({k: v for k, v in net.state_dict().items() if k.startswith("fc.")})
        try:
            load_strict(net, state, f"{self.arch} weights file {self.weights}")
        except CheckpointError as exc:
            raise EncoderWeightsError(str(exc)) from None

    def tokens(self, height: int, width: int) -> int:
        """Feature tokens per frame of height x width pixels."""
        if self.resize:
            height = width = self.resize
        return feature_grid(height) * feature_grid(width)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8:
            raise TypeError(f"{self.arch} encoder: frames must be uint8 (N, H, W, 3), got {frames.dtype}")
        x = frames.permute(0, 3, 1, 2).float()  # (N, 3, H, W), 0..255
        if self.resize:
            x = F.interpolate(
                x, size=(self.resize, self.resize), mode="bilinear", antialias=True, align_corners=False
            )
        x = (x - self.mean) / self.std
        for name in BACKBONE:
            x = getattr(self, name)(x)  # ends (N, C, h, w)
        return x.flatten(2).transpose(1, 2)  # (N, h*w, C)

    def digest(self) -> str:
        return tensor_digest(self.state_dict())

    def describe(self) -> ImageEncoderSpec:
        """What a dataset records about the encoder that computed its features."""
        return ImageEncoderSpec(
            arch=self.arch, weights=self.weights, sha256=self.digest(), resize=self.resize
        )


def frozen_encoder(spec: ImageEncoderSpec) -> ResNetEncoder:
    """The encoder a dataset's features came from, rebuilt in eval mode without gradients; an error if
    its tensors differ from the recorded ones (other weights, another torchvision initialisation)."""
    encoder = ResNetEncoder(spec.arch, spec.weights, spec.resize).eval().requires_grad_(False)
    digest = encoder.digest()
    if digest != spec.sha256:
        raise EncoderWeightsError(
            f"the {spec.arch} encoder rebuilt from weights {spec.weights!r} is not the one that computed the "
            f"training features (sha256 {digest[:12]}... != recorded {spec.sha256[:12]}...)"
        )
    return encoder


@torch.inference_mode()
def encode_frames(encoder: ResNetEncoder, frames: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Frames (..., V, H, W, 3) uint8 -> features (..., V, tokens, channels) float32, ``batch`` frames
    at a time."""
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = torch.cat([encoder(flat[i : i + batch]) for i in range(0, len(flat), batch)])  # (N, tokens, C)
    return out.reshape(*lead, *out.shape[1:]).float()
