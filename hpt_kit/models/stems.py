"""Stems: one modality of one embodiment -> a fixed number of tokens."""

from __future__ import annotations

import math

import torch
from torch import nn

from hpt_kit.core.spec import StemSpec
from hpt_kit.models.layers import CrossAttention, Mlp


class MlpStem(nn.Module):
    """Projector MLP on every input token, then cross-attention from ``num_tokens`` learned latents.

    Input (B, H, *step_shape): the last axis is the channel axis and every other axis indexes tokens,
    so a state history (B, H, S) is H tokens and precomputed image features (B, H, V, N, C) are
    H*V*N tokens. Output (B, num_tokens, width) whatever the input length.

    Images have their own stem kind, ``resnet`` (``stem_image.py``): an encoder for raw frames and one
    of these per camera view.
    """

    def __init__(self, spec: StemSpec, step_shape: tuple[int, ...], width: int, observation_horizon: int):
        super().__init__()
        if width % spec.num_heads:
            raise ValueError(
                f"stem {spec.modality!r}: trunk width {width} is not divisible by num_heads {spec.num_heads}"
            )
        self.tokens_in = observation_horizon * math.prod(step_shape[:-1])
        self.tokens_out = spec.num_tokens
        self.project = Mlp([step_shape[-1], *spec.hidden, width])
        self.attend = CrossAttention(width, spec.num_tokens, spec.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x = x.reshape(B, -1, x.shape[-1])  # (B, N, C)
        return self.attend(self.project(x))  # (B, num_tokens, D)


def build_mlp_stem(spec: StemSpec, step_shape: tuple[int, ...], width: int, observation_horizon: int) -> nn.Module:
    return MlpStem(spec, step_shape, width, observation_horizon)
