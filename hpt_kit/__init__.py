"""hpt-kit: Heterogeneous Pre-trained Transformers as a toolkit of embodiment plugins."""

from hpt_kit._preload import preload_for_osmesa

preload_for_osmesa()  # before anything can import mujoco; see _preload.py

from hpt_kit.embodiment import (  # noqa: E402
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
from hpt_kit.hookspecs import hookimpl  # noqa: E402

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
