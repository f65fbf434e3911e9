"""Exporters: plugins that write a kit dataset in another format (LeRobot v3.0), the mirror of importers.

The kit reads its own store once for every format (``hpt_kit.data.exporting``): it opens the dataset,
describes it as an :class:`ExportSource` (rate, names, cameras, instructions) and hands the exporter
one :class:`ExportEpisode` at a time (state, action, each camera's frames, the instruction). The
exporter only writes its format into the folder it is given; the kit writes into a temporary folder
beside the target and renames it into place when the exporter returns, so a failed export leaves
nothing behind. Exporters register through ``hpt_register_exporters``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

VIDEO = "video"  # cameras as video files
IMAGES = "images"  # cameras as still images (PNG)
CAMERA_MODES = (VIDEO, IMAGES)
EXPORTER_MEMBERS = ("export",)


class ExportError(ValueError):
    """A dataset that cannot be written in the format asked for; the message names the dataset, the
    episode or camera, and what to change."""


@dataclass(frozen=True)
class ExportSource:
    """What the dataset holds, as the exporter needs it."""

    location: str  # the dataset folder
    embodiment: str
    fps: float  # the control rate (Hz): one step per 1 / fps seconds
    episodes: int
    steps: int
    state_names: tuple[str, ...]  # a name per state value; empty when the dataset has none
    action_names: tuple[str, ...]
    state_dim: int
    action_dim: int
    views: tuple[str, ...] = ()  # camera names, in the stored order; empty without frames
    frame_size: tuple[int, int] = (0, 0)  # (height, width) of every view
    tasks: tuple[str, ...] = ()  # every episode's instruction, distinct, first seen first
    robot: str = ""  # the robot's name as the format records it (the embodiment, or an imported source's robot)
    extra: Mapping[str, Any] = field(default_factory=dict)  # kit version, spec, notes


@dataclass(frozen=True)
class ExportEpisode:
    """One episode: ``state`` (T, state_dim) and ``action`` (T, action_dim) float32, ``views`` each
    (T, H, W, 3) uint8 by camera name, and the episode's instruction (the dataset's description when
    it has none)."""

    index: int
    state: np.ndarray
    action: np.ndarray
    views: Mapping[str, np.ndarray]
    instruction: str


@dataclass(frozen=True)
class ExportOptions:
    cameras: str = VIDEO  # VIDEO or IMAGES

    def __post_init__(self) -> None:
        if self.cameras not in CAMERA_MODES:
            raise ValueError(f"cameras must be one of {', '.join(CAMERA_MODES)}, got {self.cameras!r}")


class Exporter(Protocol):
    name: str  # the format on the command line, lowercase ("lerobot")

    def export(self, source: ExportSource, episodes: Iterable[ExportEpisode], out: Path, options: ExportOptions) -> None:
        """Write every episode (in order) into the empty folder ``out``; raise ExportError for a
        dataset the format cannot hold."""
        ...
