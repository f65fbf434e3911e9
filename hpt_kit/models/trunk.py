"""The shared trunk: a stack of pre-norm transformer blocks over the concatenated stem tokens."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.models.layers import Block, init_linear
from hpt_kit.weights.tensors import load_strict


class Trunk(nn.Module):
    """(B, L, D) tokens -> (B, L, D) tokens. Adds no positional table itself; the policy does."""

    def __init__(self, config: TrunkConfig):
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(Block(config.embed_dim, config.num_heads) for _ in range(config.num_blocks))
        self.apply(init_linear)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return x


def load_trunk(location: str | Path) -> Trunk:
    """The trunk at ``location`` (a kit checkpoint or run directory, a published HPT folder, local or
    ``hf://``), every tensor loaded strictly, in eval mode.

    Called on tokens (B, L, D) it returns (B, L, D); it adds no positional table (see
    :func:`hpt_kit.positional_table`).
    """
    from hpt_kit.weights.trunks import resolve_trunk

    source = resolve_trunk(location)
    trunk = Trunk(source.config)
    load_strict(trunk, source.tensors, f"{source.path} (trunk)")
    return trunk.eval()
