"""The kit's own stems, heads and text encoder, registered through the hooks a third-party plugin uses.

The stem and head builders are registered deferred: their modules (and torch, about 1.2 s) load when
a model is first built, so the commands that build none (``import``, ``convert``, ``data``) and the
workers they fan out to start without them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from hpt_kit.hookspecs import hookimpl


class Deferred:
    """The builder ``module:name``, imported when first called or when its signature is read."""

    def __init__(self, module: str, name: str):
        self.module = module
        self.name = name

    def target(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.target()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.target())

    def __repr__(self) -> str:
        return f"{self.module}:{self.name}"


@hookimpl
def hpt_register_stems(registry) -> None:
    registry.add("mlp", Deferred("hpt_kit.models.stems", "build_mlp_stem"))
    registry.add("resnet", Deferred("hpt_kit.models.stem_image", "build_resnet_stem"))


@hookimpl
def hpt_register_heads(registry) -> None:
    registry.add("mlp", Deferred("hpt_kit.models.heads", "build_mlp_head"))
    registry.add("transformer-decoder", Deferred("hpt_kit.models.head_decoder", "build_decoder_head"))
    registry.add("diffusion", Deferred("hpt_kit.models.head_diffusion", "build_diffusion_head"))
    registry.add("gmm", Deferred("hpt_kit.models.head_gmm", "build_gmm_head"))


@hookimpl
def hpt_register_text_encoders(registry) -> None:
    from hpt_kit.core.language import HashNgramEncoder

    registry.add("hash-ngram", HashNgramEncoder)
