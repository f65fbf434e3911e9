"""Heads: trunk tokens -> an action chunk. Every head has ``loss(features, actions)`` and
``predict(features) -> (B, action_horizon, action_dim)``; both work on normalised actions in [-1, 1].

This file holds the ``mlp`` head and what every head shares (regression losses, option parsing). The
other kinds live one per file: ``head_decoder.py`` (``transformer-decoder``), ``head_diffusion.py``
(``diffusion``), ``head_gmm.py`` (``gmm``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from hpt_kit.core.recipe import scalar_matches
from hpt_kit.core.spec import HeadSpec, StemSpec
from hpt_kit.models.layers import Mlp

LOSSES = {
    "huber": F.smooth_l1_loss,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
}

Options = TypeVar("Options")


def regression_loss(name: str):
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    return LOSSES[name]


def parse_options(cls: type[Options], spec: HeadSpec | StemSpec, name: str, what: str = "head") -> Options:
    """``spec.options`` as the component's frozen options dataclass ``cls``, defaults filled in.

    Heads and stems share it (``what`` is "head" or "stem", ``name`` its kind). A key the component
    does not know is an error rather than ignored: a typo in a recipe's options would otherwise train
    with the default and nobody would notice. Values must have the field's type (an int is accepted
    where a float is expected); range checks belong to ``cls.__post_init__``.
    """
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in spec.options.items():
        if key not in known:
            raise ValueError(f"{what} {name!r}: unknown option {key!r}; known: {', '.join(known)}")
        tp = hints[key]
        if not scalar_matches(value, tp):
            raise ValueError(f"{what} {name!r}: option {key!r} must be {_type_name(tp)}, got {value!r}")
    try:
        return cls(**{k: (float(v) if hints[k] is float else v) for k, v in spec.options.items()})
    except ValueError as exc:
        raise ValueError(f"{what} {name!r}: {exc}") from None


def _type_name(tp: type) -> str:
    return getattr(tp, "__name__", None) or str(tp)  # a union such as ``str | None`` has no __name__


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

