"""Per-embodiment normalisation kept as buffers, so the statistics travel with every checkpoint.

States are standardised (mean/std); actions are mapped min-max to [-1, 1]. Dimensions that never
vary keep a unit scale instead of dividing by zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

EPS = 1e-6


class Normalizer(nn.Module):
    def __init__(self, stats: Mapping[str, Any]):
        super().__init__()
        s, a = stats["state"], stats["action"]
        std = torch.as_tensor(s["std"], dtype=torch.float32)
        span = torch.as_tensor(a["max"], dtype=torch.float32) - torch.as_tensor(a["min"], dtype=torch.float32)
        self.register_buffer("state_mean", torch.as_tensor(s["mean"], dtype=torch.float32))
        self.register_buffer("state_scale", torch.where(std > EPS, std, torch.ones_like(std)))
        self.register_buffer("action_min", torch.as_tensor(a["min"], dtype=torch.float32))
        self.register_buffer("action_span", torch.where(span > EPS, span, torch.ones_like(span)))

    def state(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.state_mean) / self.state_scale

    def action(self, a: torch.Tensor) -> torch.Tensor:
        return 2.0 * (a - self.action_min) / self.action_span - 1.0

    def unaction(self, a: torch.Tensor) -> torch.Tensor:
        return (a + 1.0) * 0.5 * self.action_span + self.action_min

    def stats(self) -> dict[str, dict[str, list[float]]]:
        return {
            "state": {"mean": self.state_mean.tolist(), "std": self.state_scale.tolist()},
            "action": {"min": self.action_min.tolist(), "max": (self.action_min + self.action_span).tolist()},
        }
