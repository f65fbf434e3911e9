"""hpt-kit: Heterogeneous Pre-trained Transformers as a toolkit of embodiment plugins."""

from hpt_kit.embodiment import (
    ActionSpec,
    Controller,
    ConvertRequest,
    Embodiment,
    HeadSpec,
    ImageFeatureSpec,
    ImageSpec,
    LanguageSpec,
    ObservationSpec,
    RolloutRequest,
    RolloutResult,
    SpecError,
    StemSpec,
)
from hpt_kit.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "ActionSpec",
    "Controller",
    "ConvertRequest",
    "Embodiment",
    "HeadSpec",
    "ImageFeatureSpec",
    "ImageSpec",
    "LanguageSpec",
    "ObservationSpec",
    "RolloutRequest",
    "RolloutResult",
    "SpecError",
    "StemSpec",
    "__version__",
    "hookimpl",
]
