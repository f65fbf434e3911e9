"""Heads: trunk tokens -> an action chunk. Every head has ``loss(features, actions)`` and
``predict(features) -> (B, action_horizon, action_dim)``; both work on normalised actions in [-1, 1].

This file holds the ``mlp`` head and what every head shares (regression losses; option parsing lives
in ``hpt_kit.core.config.parse_options``). The other kinds live one per file: ``head_decoder.py``
(``transformer-decoder``), ``head_diffusion.py`` (``diffusion``), ``head_gmm.py`` (``gmm``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hpt_kit.core.config import parse_options  # noqa: F401 - plugins were told to import it from here
from hpt_kit.core.spec import HeadSpec
from hpt_kit.models.layers import Mlp

LOSSES = {
    "huber": F.smooth_l1_loss,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
}


def regression_loss(name: str):
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    return LOSSES[name]


class MlpHead(nn.Module):
    """Mean-pooled trunk tokens -> MLP -> the whole chunk at once.

    ``spec.hidden`` are the MLP's hidden widths and ``spec.loss`` the regression loss; no options.
    """

    def __init__(self, spec: HeadSpec, width: int, action_dim: int):
        super().__init__()
        self.horizon = spec.action_horizon
        self.action_dim = action_dim
        self.loss_fn = regression_loss(spec.loss)
        self.net = Mlp([width, *spec.hidden, spec.action_horizon * action_dim])

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, L, D) -> actions (B, action_horizon, action_dim)."""
        pooled = features.mean(dim=1)  # (B, D)
        return self.net(pooled).reshape(-1, self.horizon, self.action_dim)

    def loss(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.predict(features), actions)


def build_mlp_head(spec: HeadSpec, width: int, action_dim: int) -> nn.Module:
    return MlpHead(spec, width, action_dim)

