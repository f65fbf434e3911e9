"""The ``diffusion`` head: a denoiser over the whole action chunk, trained as a DDPM, sampled with DDIM.

A regression head averages the demonstrations it cannot tell apart; a denoising head models the
distribution of chunks given the trunk's features, so two equally good ways of reaching a target stay
two chunks instead of becoming their mean.

Randomness. ``loss`` draws timesteps and noise from the global CPU generator: ``torch.manual_seed``
makes training reproducible, and the training loop's saved RNG state resumes it exactly on any
device. ``predict`` starts every chunk from one fixed noise chunk, drawn once at construction from a
private generator seeded with option ``seed``: with deterministic DDIM the prediction is then a plain
function of the features (the same observation gives the same chunk, whatever the batch it is in or
the global seed), and predicting neither reads nor advances the global RNG. Different seeds give
different (equally valid) samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpt_kit.core.config import parse_options
from hpt_kit.core.spec import HeadSpec
from hpt_kit.models.layers import Block, Mlp, positional_table

NAME = "diffusion"
SCHEDULES = ("cosine", "linear")


def noise_levels(schedule: str, steps: int) -> torch.Tensor:
    """alpha_bar[t] for t = 0 .. steps-1, the share of signal variance left at noise level t, (steps,).

    ``cosine`` is the schedule of Nichol & Dhariwal (2021) with offset 0.008; ``linear`` spaces betas
    from 1e-4 to 0.02 at 1000 steps and scales both ends by 1000/steps, so fewer steps still end in
    (almost) pure noise. Betas are capped at 0.999 so that no step destroys all signal at once.
    """
    assert schedule in SCHEDULES, f"unknown schedule {schedule!r}"
    if schedule == "cosine":
        s = 0.008
        x = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((x + s) / (1 + s) * math.pi / 2) ** 2  # (steps+1,)
        betas = 1 - f[1:] / f[:-1]
    else:
        scale = 1000 / steps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
    return torch.cumprod(1 - betas.clamp(max=0.999), dim=0).float()


def ddim_timesteps(train_steps: int, inference_steps: int) -> torch.Tensor:
    """Noise levels visited by DDIM, from the noisiest to 0, evenly spaced and distinct, (inference_steps,)."""
    assert 1 <= inference_steps <= train_steps
    return torch.linspace(train_steps - 1, 0, inference_steps, dtype=torch.float64).round().long()


class ChunkDenoiser(nn.Module):
    """(noisy chunk (B, K, A), level t (B,), condition (B, C)) -> predicted noise (B, K, A).

    A small transformer over one condition token followed by the K chunk-step tokens. The condition
    token is the projected features plus the timestep embedding; it is also added to every step token
    so that even one layer (or K = 1) sees it directly.
    """

    def __init__(
        self, action_dim: int, horizon: int, cond_dim: int, width: int, layers: int, heads: int, levels: int
    ):
        super().__init__()
        assert width % heads == 0, f"denoiser width {width} must be divisible by heads {heads}"
        self.embed = nn.Linear(action_dim, width)
        self.cond = nn.Linear(cond_dim, width)
        self.time = Mlp([width, width, width])
        # Constants of position and level only: rebuilt from the options, never saved.
        self.register_buffer("step_table", positional_table(horizon, width), persistent=False)  # (1, K, W)
        self.register_buffer("level_table", positional_table(levels, width)[0], persistent=False)  # (T, W)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.out = nn.Linear(width, action_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.cond(cond) + self.time(self.level_table[t])  # (B, W)
        h = self.embed(x) + self.step_table + c[:, None]  # (B, K, W)
        h = torch.cat([c[:, None], h], dim=1)  # (B, 1+K, W)
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h[:, 1:]))  # (B, K, A)


@dataclass(frozen=True)
class DiffusionOptions:
    train_steps: int = 100  # noise levels T of the forward process
    inference_steps: int = 10  # DDIM steps per prediction, 1 <= inference_steps <= train_steps
    schedule: str = "cosine"  # "cosine" or "linear" betas
    width: int = 128  # the denoiser's own width, independent of the trunk's
    layers: int = 2  # denoiser transformer blocks
    heads: int = 4  # denoiser attention heads; must divide width
    seed: int = 0  # seed of the starting noise of every prediction (see the module docstring)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if min(self.train_steps, self.width, self.layers, self.heads) < 1:
            raise ValueError("train_steps, width, layers and heads must be >= 1")
        if not 1 <= self.inference_steps <= self.train_steps:
            raise ValueError(
                f"inference_steps must be in [1, train_steps={self.train_steps}], got {self.inference_steps}"
            )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")


class DiffusionHead(nn.Module):
    """Trunk tokens (B, L, D) -> chunk (B, action_horizon, action_dim) in [-1, 1].

    Conditioned on the mean-pooled, layer-normed trunk tokens. Trained by epsilon prediction with the
    squared error (``spec.loss`` and ``spec.hidden`` are not used). Options (``spec.options``):
    ``train_steps`` (100), ``inference_steps`` (10), ``schedule`` ("cosine"), ``width`` (128),
    ``layers`` (2), ``heads`` (4), ``seed`` (0).
    """

    def __init__(self, spec: HeadSpec, width: int, action_dim: int):
        super().__init__()
        opts = parse_options(DiffusionOptions, spec, NAME)
        assert spec.action_horizon >= 1 and action_dim >= 1
        self.shape = (spec.action_horizon, action_dim)
        self.levels = opts.train_steps
        self.pool_norm = nn.LayerNorm(width, eps=1e-6)
        self.denoiser = ChunkDenoiser(
            action_dim, spec.action_horizon, width, opts.width, opts.layers, opts.heads, opts.train_steps
        )
        alpha_bar = noise_levels(opts.schedule, opts.train_steps)  # (T,)
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)
        start = torch.randn((1, *self.shape), generator=torch.Generator().manual_seed(opts.seed))
        self.register_buffer("start_noise", start, persistent=False)  # (1, K, A), a function of the seed
        self.sampling_levels = ddim_timesteps(opts.train_steps, opts.inference_steps).tolist()

    def condition(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool_norm(features.mean(dim=1))  # (B, D)

    def loss(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Squared error of the predicted noise at a uniformly drawn level, averaged over the chunk."""
        B = actions.shape[0]
        t = torch.randint(0, self.levels, (B,)).to(actions.device)  # (B,)
        noise = torch.randn(actions.shape).to(actions)  # (B, K, A)
        ab = self.alpha_bar[t][:, None, None]  # (B, 1, 1)
        noisy = ab.sqrt() * actions + (1 - ab).sqrt() * noise  # (B, K, A)
        return F.mse_loss(self.denoiser(noisy, t, self.condition(features)), noise)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, L, D) -> actions (B, action_horizon, action_dim), by deterministic DDIM (eta = 0).

        The clean-chunk estimate is clipped to [-1, 1] at every step (actions are normalised to that
        range) and the noise estimate is made consistent with the clipped chunk.
        """
        B = features.shape[0]
        cond = self.condition(features)  # (B, D)
        x = self.start_noise.expand(B, -1, -1).to(features)  # (B, K, A)
        levels = self.sampling_levels
        for i, t in enumerate(levels):
            ab = self.alpha_bar[t]
            ab_next = self.alpha_bar[levels[i + 1]] if i + 1 < len(levels) else torch.ones_like(ab)
            eps = self.denoiser(x, torch.full((B,), t, dtype=torch.long, device=x.device), cond)  # (B, K, A)
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)  # (B, K, A)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps  # (B, K, A)
        return x.clamp(-1, 1)


def build_diffusion_head(spec: HeadSpec, width: int, action_dim: int) -> nn.Module:
    return DiffusionHead(spec, width, action_dim)
