"""The ``gmm`` head: a Gaussian mixture over the flattened action chunk, trained by likelihood.

Like the ``diffusion`` head it keeps distinct ways of acting apart instead of averaging them, at the
cost of a fixed number of modes and one forward pass instead of several denoising steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpt_kit.core.config import parse_options
from hpt_kit.core.spec import HeadSpec
from hpt_kit.models.layers import Mlp

NAME = "gmm"


@dataclass(frozen=True)
class GmmOptions:
    modes: int = 5  # mixture components
    min_std: float = 0.01  # floor of every standard deviation, in normalised action units; bounds the NLL

    def __post_init__(self) -> None:
        if self.modes < 1:
            raise ValueError(f"modes must be >= 1, got {self.modes}")
        if not self.min_std > 0:
            raise ValueError(f"min_std must be > 0, got {self.min_std}")


class GmmHead(nn.Module):
    """Trunk tokens (B, L, D) -> chunk (B, action_horizon, action_dim): the mean of the likeliest mode.

    The mixture is over the chunk flattened to N = action_horizon * action_dim dimensions, each mode
    with a diagonal covariance, all predicted from the mean-pooled trunk tokens through an MLP with
    ``spec.hidden`` widths. ``loss`` is the negative log-likelihood divided by N (so its scale does not
    grow with the chunk); it can be negative. ``spec.loss`` is not used. Options (``spec.options``):
    ``modes`` (5), ``min_std`` (0.01).
    """

    def __init__(self, spec: HeadSpec, width: int, action_dim: int):
        super().__init__()
        opts = parse_options(GmmOptions, spec, NAME)
        assert spec.action_horizon >= 1 and action_dim >= 1
        self.shape = (spec.action_horizon, action_dim)
        self.modes = opts.modes
        self.min_std = opts.min_std
        self.dims = spec.action_horizon * action_dim
        self.trunk = Mlp([width, *spec.hidden], final_activation=True) if spec.hidden else nn.Identity()
        out = spec.hidden[-1] if spec.hidden else width
        self.logits = nn.Linear(out, opts.modes)
        self.means = nn.Linear(out, opts.modes * self.dims)
        self.stds = nn.Linear(out, opts.modes * self.dims)

    def mixture(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features (B, L, D) -> log mixture weights (B, M), means (B, M, N), standard deviations (B, M, N)."""
        h = self.trunk(features.mean(dim=1))  # (B, H)
        log_weights = F.log_softmax(self.logits(h), dim=-1)  # (B, M)
        means = self.means(h).reshape(-1, self.modes, self.dims)  # (B, M, N)
        stds = F.softplus(self.stds(h)).reshape(-1, self.modes, self.dims) + self.min_std  # (B, M, N)
        return log_weights, means, stds

    def loss(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per chunk dimension: -log sum_m w_m N(a; mu_m, diag(s_m^2)) / N."""
        log_weights, means, stds = self.mixture(features)
        a = actions.reshape(-1, 1, self.dims)  # (B, 1, N)
        z = (a - means) / stds  # (B, M, N)
        log_norm = stds.log().sum(-1) + 0.5 * self.dims * math.log(2 * math.pi)  # (B, M)
        log_normal = -0.5 * (z**2).sum(-1) - log_norm  # (B, M)
        log_likelihood = torch.logsumexp(log_weights + log_normal, dim=-1)  # (B,)
        return -log_likelihood.mean() / self.dims

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, L, D) -> actions (B, action_horizon, action_dim), clipped to [-1, 1]."""
        log_weights, means, _ = self.mixture(features)
        best = log_weights.argmax(dim=-1)  # (B,)
        chosen = means[torch.arange(means.shape[0], device=means.device), best]  # (B, N)
        return chosen.reshape(-1, *self.shape).clamp(-1, 1)


def build_gmm_head(spec: HeadSpec, width: int, action_dim: int) -> nn.Module:
    return GmmHead(spec, width, action_dim)
