"""hpt-kit: Heterogeneous Pre-trained Transformers as a toolkit of embodiment plugins."""

from hpt_kit._preload import choose_headless_gl, interrupt_start_up, preload_for_osmesa

interrupt_start_up()  # the hpt-kit command: Ctrl-C while it loads exits 130, not with a traceback

choose_headless_gl()  # MUJOCO_GL where no display is and none was set; before anything imports mujoco
preload_for_osmesa()  # before anything can import mujoco; see _preload.py

from hpt_kit.core.spec import (  # noqa: E402
    ACTION,
    IMAGE,
    IMAGE_FEATURES,
    INSTRUCTION,
    LANGUAGE,
    STATE,
    ActionSpec,
    Controller,
    ConvertRequest,
    Embodiment,
    HeadSpec,
    ImageEncoderSpec,
    ImageFeatureSpec,
    ImageSpec,
    LanguageSpec,
    ObservationSpec,
    RolloutRequest,
    RolloutResult,
    SpecError,
    StemSpec,
)
from hpt_kit.core.version import __version__  # noqa: E402
from hpt_kit.hookspecs import hookimpl  # noqa: E402


def __getattr__(name: str):
    """Torch-backed helpers, imported on first use so ``import hpt_kit`` stays light."""
    if name == "load_trunk":
        from hpt_kit.models.trunk import load_trunk

        return load_trunk
    if name == "positional_table":
        from hpt_kit.models.layers import positional_table

        return positional_table
    raise AttributeError(f"module 'hpt_kit' has no attribute {name!r}")


__all__ = [
    "ACTION",
    "IMAGE",
    "IMAGE_FEATURES",
    "INSTRUCTION",
    "LANGUAGE",
    "STATE",
    "ActionSpec",
    "Controller",
    "ConvertRequest",
    "Embodiment",
    "HeadSpec",
    "ImageEncoderSpec",
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
    "load_trunk",
    "positional_table",
]
