"""Building blocks, each defined once: Mlp, CrossAttention, SelfAttention, Block, positional table."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def positional_table(length: int, width: int) -> torch.Tensor:
    """The fixed sinusoid table, (1, length, width).

    For token p and channel j the angle is p / 10000^(2*floor(j/2)/width); sin on even channels, cos on
    odd ones (the table the published HPT trunks were trained with).
    """
    pos = torch.arange(length, dtype=torch.float64)[:, None]  # (L, 1)
    j = torch.arange(width, dtype=torch.float64)[None, :]  # (1, D)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / width)  # (L, D)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)[None]  # (1, L, D)


class Mlp(nn.Module):
    """Linear layers with GELU between them; ``widths`` = [in, hidden..., out]."""

    def __init__(self, widths: list[int] | tuple[int, ...], final_activation: bool = False):
        super().__init__()
        assert len(widths) >= 2, "an Mlp needs at least an input and an output width"
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2 or final_activation:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttention(nn.Module):
    """``num_tokens`` learned latents attend to a variable-length input: (B, N, D) -> (B, num_tokens, D)."""

    def __init__(self, width: int, num_tokens: int, num_heads: int):
        super().__init__()
        assert width % num_heads == 0, f"width {width} must be divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.latents = nn.Parameter(torch.randn(1, num_tokens, width) * 0.02)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        h = self.num_heads
        q = self.q(self.latents).expand(B, -1, -1)  # (B, T, D)
        k, v = self.kv(x).chunk(2, dim=-1)  # (B, N, D) each
        q, k, v = (t.reshape(B, -1, h, D // h).transpose(1, 2) for t in (q, k, v))  # (B, h, *, D/h)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, D/h)
        return self.out(y.transpose(1, 2).reshape(B, -1, D))  # (B, T, D)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one learned extra key/value position (``bias_k``/``bias_v``).

    Numerically this is ``nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=True)`` (the
    published HPT trunks use it); parameters carry the same names so those weights load as they are.
    It runs on fused ``scaled_dot_product_attention``.
    """

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        assert width % num_heads == 0, f"width {width} must be divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.bias_k = nn.Parameter(torch.empty(1, 1, width))
        self.bias_v = nn.Parameter(torch.empty(1, 1, width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_normal_(self.bias_k)
        nn.init.xavier_normal_(self.bias_v)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D); key_padding_mask (B, L) bool, True where a token is padding."""
        B, L, D = x.shape
        h = self.num_heads
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # (B, L, D) each
        k = torch.cat([k, self.bias_k.expand(B, 1, D)], dim=1)  # (B, L+1, D)
        v = torch.cat([v, self.bias_v.expand(B, 1, D)], dim=1)  # (B, L+1, D)
        q = q.reshape(B, L, h, D // h).transpose(1, 2)  # (B, h, L, D/h)
        k = k.reshape(B, L + 1, h, D // h).transpose(1, 2)  # (B, h, L+1, D/h)
        v = v.reshape(B, L + 1, h, D // h).transpose(1, 2)
        mask = None
        if key_padding_mask is not None:
            keep = torch.cat([~key_padding_mask, key_padding_mask.new_ones(B, 1)], dim=1)  # (B, L+1)
            mask = keep[:, None, None, :]  # (B, 1, 1, L+1), True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, L, D/h)
        return self.out_proj(y.transpose(1, 2).reshape(B, L, D))


class FeedForward(nn.Module):
    def __init__(self, width: int, ratio: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(width, ratio * width)
        self.fc2 = nn.Linear(ratio * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm_1(x)), then x + mlp(norm_2(x))."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.norm_1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = SelfAttention(width, num_heads)
        self.norm_2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = FeedForward(width)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), key_padding_mask)
        return x + self.mlp(self.norm_2(x))


def init_linear(module: nn.Module) -> None:
    """Truncated-normal weights and zero biases for the Linear layers HPT trains from scratch."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


__all__ = [
    "Block",
    "CrossAttention",
    "FeedForward",
    "Mlp",
    "SelfAttention",
    "init_linear",
    "positional_table",
]
