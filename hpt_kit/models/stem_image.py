"""The ``resnet`` stem: camera views -> ResNet feature tokens -> per-view MLP + cross-attention tokens.

One stem kind, two modes, chosen by the modality the stem reads:

- ``image`` (end to end): uint8 frames (B, H, V, h, w, 3) go through a :class:`ResNetEncoder` inside
  the stem, trained with the rest of the network when ``train_encoder`` is true.
- ``image_features`` (precomputed): features (B, H, V, tokens, C) that ``hpt-kit convert
  --image-encoder`` computed once with a frozen encoder; the stem holds only the tokenizer.

Either way every view gets its own ``num_tokens`` tokens (an :class:`MlpStem` over that view's
H * tokens feature vectors), so the stem emits V * num_tokens tokens, view by view. For the same
frozen encoder weights the two modes give the same tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from hpt_kit.core.config import parse_options
from hpt_kit.core.spec import IMAGE, IMAGE_FEATURES, ImageEncoderSpec, ImageFeatureSpec, StemSpec, check_arch
from hpt_kit.models.stems import MlpStem
from hpt_kit.models.vision import IMAGENET, ResNetEncoder

NAME = "resnet"
VIEW_MODES = ("shared", "independent")


@dataclass(frozen=True)
class ResNetStemOptions:
    arch: str = "resnet18"  # a torchvision ResNet, see hpt_kit.models.vision.ARCHS
    # "imagenet" (torchvision's, downloaded), None / "none" (seeded random init) or a .pth/.safetensors file.
    weights: str | None = IMAGENET
    # "shared": one encoder and one tokenizer for all views; "independent": one of each per view.
    views: str = "shared"
    train_encoder: bool = True  # fine-tune the encoder (end to end); false keeps it frozen, in eval mode
    # Resize frames to resize x resize before the encoder (224 is ImageNet's scale); 0 = as rendered.
    resize: int = 0

    def __post_init__(self) -> None:
        check_arch(self.arch)
        if self.views not in VIEW_MODES:
            raise ValueError(f"option 'views' must be one of {', '.join(VIEW_MODES)}, got {self.views!r}")
        if self.resize < 0:
            raise ValueError(f"option 'resize' must be >= 0 (0 = as rendered), got {self.resize}")


class ResNetStem(nn.Module):
    """(B, H, V, h, w, 3) uint8 frames or (B, H, V, tokens, C) features -> (B, V * num_tokens, width)."""

    def __init__(
        self,
        spec: StemSpec,
        step_shape: tuple[int, ...],
        width: int,
        observation_horizon: int,
        pretrained: bool = True,
    ):
        super().__init__()
        opts = parse_options(ResNetStemOptions, spec, NAME, what="stem")
        self.end_to_end = spec.modality == IMAGE
        if spec.modality == IMAGE:
            if len(step_shape) != 4 or step_shape[-1] != 3:
                raise ValueError(
                    f"stem {NAME!r}: expects RGB frames (views, height, width, 3), got {step_shape}"
                )
            views, height, frame_width, _ = step_shape
            copies = views if opts.views == "independent" else 1
            self.encoders = nn.ModuleList(
                ResNetEncoder(opts.arch, opts.weights, opts.resize, pretrained) for _ in range(copies)
            )
            tokens, channels = self.encoders[0].tokens(height, frame_width), self.encoders[0].channels
            self.train_encoder = opts.train_encoder
            if not opts.train_encoder:
                self.encoders.requires_grad_(False)
        elif spec.modality == IMAGE_FEATURES:
            if len(step_shape) != 3:
                raise ValueError(
                    f"stem {NAME!r}: expects features (views, tokens, channels), got {step_shape}"
                )
            if spec.options.get("train_encoder") is True:
                raise ValueError(
                    f"stem {NAME!r} on precomputed image_features cannot train its encoder (the features were "
                    "computed once, frozen); convert without --image-encoder to fine-tune it end to end"
                )
            views, tokens, channels = step_shape
            self.encoders = nn.ModuleList()
            self.train_encoder = False
        else:
            raise ValueError(
                f"stem {NAME!r} reads {IMAGE!r} (frames, encoder inside) or {IMAGE_FEATURES!r} (precomputed), "
                f"not {spec.modality!r}"
            )
        copies = views if opts.views == "independent" else 1
        self.tokenizers = nn.ModuleList(
            MlpStem(spec, (tokens, channels), width, observation_horizon) for _ in range(copies)
        )
        self.tokens_out = views * spec.num_tokens

    def train(self, mode: bool = True) -> ResNetStem:
        super().train(mode)
        if not self.train_encoder:
            self.encoders.eval()  # frozen batch-norm statistics stay as loaded
        return self

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, H, V, h, w, 3) uint8 -> features (B, H, V, tokens, C), with this stem's encoders."""
        B, H, V = frames.shape[:3]
        if len(self.encoders) == 1:
            out = self.encoders[0](frames.reshape(B * H * V, *frames.shape[3:]))  # (B*H*V, N, C)
            return out.reshape(B, H, V, *out.shape[1:])
        per_view = [
            enc(frames[:, :, v].reshape(B * H, *frames.shape[3:])) for v, enc in enumerate(self.encoders)
        ]
        return torch.stack(per_view, dim=1).reshape(B, H, V, *per_view[0].shape[1:])  # (B, H, V, N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x) if self.end_to_end else x  # (B, H, V, N, C)
        B, H, V, N, C = feats.shape
        if len(self.tokenizers) == 1:
            per_view = feats.transpose(1, 2).reshape(B * V, H, N, C)  # every view as its own sample
            tokens = self.tokenizers[0](per_view)  # (B*V, n, D)
            return tokens.reshape(B, V * tokens.shape[1], tokens.shape[2])  # (B, V*n, D), view by view
        return torch.cat([tok(feats[:, :, v]) for v, tok in enumerate(self.tokenizers)], dim=1)  # (B, V*n, D)


def build_resnet_stem(
    spec: StemSpec, step_shape: tuple[int, ...], width: int, observation_horizon: int, pretrained: bool = True
) -> nn.Module:
    return ResNetStem(spec, step_shape, width, observation_horizon, pretrained)


def precomputed_stems(stems: tuple[StemSpec, ...], encoder: ImageEncoderSpec) -> tuple[StemSpec, ...]:
    """An embodiment's stems for a dataset whose frames were encoded at conversion: each ``resnet``
    stem on ``image`` now reads ``image_features``, with the encoder's settings recorded in its options
    and ``train_encoder`` off. If no stem reads the features, a default ``resnet`` stem is added."""
    out = []
    for s in stems:
        if s.modality == IMAGE and s.kind == NAME:
            recorded = {"arch": encoder.arch, "weights": encoder.weights, "resize": encoder.resize}
            options = {**s.options, **recorded, "train_encoder": False}
            s = dataclasses.replace(s, modality=IMAGE_FEATURES, options=options)
        out.append(s)
    if not any(s.modality == IMAGE_FEATURES for s in out):
        out.append(
            StemSpec(IMAGE_FEATURES, kind=NAME, options={"arch": encoder.arch, "train_encoder": False})
        )
    return tuple(out)


def feature_spec(encoder: ResNetEncoder, views: tuple[str, ...], height: int, width: int) -> ImageFeatureSpec:
    """The ``image_features`` field that ``encoder`` makes from frames of height x width."""
    return ImageFeatureSpec(views, encoder.tokens(height, width), encoder.channels, encoder.describe())
