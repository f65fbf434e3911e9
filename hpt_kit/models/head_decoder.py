"""The ``transformer-decoder`` head: one learned query per chunk step, decoded against the trunk tokens.

Unlike the ``mlp`` head, which pools the tokens away before predicting, each chunk step here looks at
every trunk token through cross-attention, and the steps see each other through self-attention, so a
chunk can be smooth without the pooled vector having to encode it all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hpt_kit.core.config import parse_options
from hpt_kit.core.spec import HeadSpec
from hpt_kit.models.heads import regression_loss
from hpt_kit.models.layers import FeedForward, SelfAttention

NAME = "transformer-decoder"


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: queries attend to each other, then to the memory tokens, then an MLP.

    ``layers.CrossAttention`` attends from fixed learned latents; here the queries are the evolving
    chunk-step states, so the cross-attention is PyTorch's ``nn.MultiheadAttention``.
    """

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        assert width % num_heads == 0, f"width {width} must be divisible by num_heads {num_heads}"
        self.norm_1 = nn.LayerNorm(width, eps=1e-6)
        self.self_attn = SelfAttention(width, num_heads)
        self.norm_2 = nn.LayerNorm(width, eps=1e-6)
        self.cross_attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.norm_3 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = FeedForward(width)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x (B, K, D) queries, memory (B, L, D) -> (B, K, D)."""
        x = x + self.self_attn(self.norm_1(x))  # (B, K, D)
        q = self.norm_2(x)
        x = x + self.cross_attn(q, memory, memory, need_weights=False)[0]  # (B, K, D)
        return x + self.mlp(self.norm_3(x))


@dataclass(frozen=True)
class DecoderOptions:
    layers: int = 2  # decoder layers; the trunk already did most of the work
    heads: int = 4  # attention heads; must divide the trunk width

    def __post_init__(self) -> None:
        if self.layers < 1 or self.heads < 1:
            raise ValueError(f"layers and heads must be >= 1, got layers={self.layers}, heads={self.heads}")


class TransformerDecoderHead(nn.Module):
    """Trunk tokens (B, L, D) -> chunk (B, action_horizon, action_dim).

    Options (``spec.options``): ``layers`` (2), ``heads`` (4). The decoder works at the trunk width;
    ``spec.loss`` is the regression loss; ``spec.hidden`` is not used.
    """

    def __init__(self, spec: HeadSpec, width: int, action_dim: int):
        super().__init__()
        opts = parse_options(DecoderOptions, spec, NAME)
        if width % opts.heads:
            raise ValueError(
                f"head {NAME!r}: trunk width {width} is not divisible by option heads={opts.heads}"
            )
        assert spec.action_horizon >= 1 and action_dim >= 1
        self.loss_fn = regression_loss(spec.loss)
        self.queries = nn.Parameter(torch.randn(1, spec.action_horizon, width) * 0.02)  # one per chunk step
        self.memory_norm = nn.LayerNorm(width, eps=1e-6)
        self.layers = nn.ModuleList(DecoderLayer(width, opts.heads) for _ in range(opts.layers))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.out = nn.Linear(width, action_dim)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, L, D) -> actions (B, action_horizon, action_dim)."""
        memory = self.memory_norm(features)  # (B, L, D)
        x = self.queries.expand(features.shape[0], -1, -1)  # (B, K, D)
        for layer in self.layers:
            x = layer(x, memory)  # (B, K, D)
        return self.out(self.norm(x))  # (B, K, A)

    def loss(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.predict(features), actions)


def build_decoder_head(spec: HeadSpec, width: int, action_dim: int) -> nn.Module:
    return TransformerDecoderHead(spec, width, action_dim)
