"""Importers: plugins that read robot datasets the kit did not make (LeRobot, robomimic HDF5, RLDS).

An importer knows one format and nothing else: whether a folder or file is in it (``detect``), what
it holds (``describe``: features with shapes and dtypes, frame rate, tasks, episode count, the keys
to use by default) and its episodes one at a time (``episodes``, with the chosen keys read, video
decoded and frames scaled). The kit does the rest once for every format (``hpt_kit.data.importing``):
key checks, concatenating state keys, frame sizes, language, validation, statistics, the inferred
spec and the atomic write. Importers register through ``hpt_register_importers``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

VECTOR = "vector"  # numbers per step: (D,); a scalar per step is (1,)
IMAGE = "image"  # camera frames per step: (H, W, C) uint8 once decoded
TEXT = "text"  # a string per step or per episode (a task, an instruction)
KINDS = (VECTOR, IMAGE, TEXT)


class ImportSourceError(ValueError):
    """A source that cannot be imported; the message names the dataset, episode, key or file."""


class NoEnvironment(Exception):
    """An imported dataset whose source names no simulator that can be built here; the message says
    why (no environment recorded, an environment, robot, controller or camera the installed simulator
    lacks), and the dataset is evaluated offline."""


@dataclass(frozen=True)
class Feature:
    """One field of a source, as ``describe`` reports it."""

    key: str  # the source's own name: "observation.state", "obs/eef_pos", "steps/observation/image"
    kind: str  # VECTOR, IMAGE or TEXT
    shape: tuple[int, ...]  # per step: (D,) for a vector, (H, W, C) for an image, () for text
    dtype: str  # as stored: a numpy dtype name ("float32", "uint8"), or "video/<codec>", "jpeg", "png"
    fps: float = 0.0  # a camera's own frame rate, where the source gives one
    description: str = ""
    names: tuple[str, ...] = ()  # a vector's per-value names where the source gives them (LeRobot's "names")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.key!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class SourceInfo:
    """What a source holds, and the keys the kit uses when the user names none."""

    format: str
    location: str
    episodes: int
    steps: int  # all episodes' steps together; 0 when the source does not say without reading it all
    fps: float  # the control rate in Hz; 0 when unknown
    features: tuple[Feature, ...]
    tasks: tuple[str, ...] = ()
    default_state: tuple[str, ...] = ()
    default_action: str = ""
    default_views: tuple[str, ...] = ()
    robot: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # format facts: version, env_args, filter keys

    def feature(self, key: str) -> Feature:
        """The feature ``key`` names: its full key, or an unambiguous tail of it after a '/' or '.'
        ("robot0_eef_pos" for "obs/robot0_eef_pos", "observation/state" for "steps/observation/state")."""
        exact = [f for f in self.features if f.key == key]
        tails = [f for f in self.features if f.key.endswith((f"/{key}", f".{key}"))]
        if exact or len(tails) == 1:
            return (exact or tails)[0]
        known = ", ".join(f.key for f in self.features) or "none"
        if tails:
            raise ImportSourceError(f"{self.location}: key {key!r} could be {', '.join(f.key for f in tails)}; give the full key")
        raise ImportSourceError(f"{self.location}: no key {key!r}; the keys it has: {known}")


@dataclass(frozen=True)
class Selection:
    """What to read: ``state`` keys (concatenated in this order), the ``action`` key, camera ``views``,
    the first ``episodes`` (0: all), frames scaled to ``image_size`` (height, width) where the format
    can do it while decoding, and importer-specific ``options`` (e.g. robomimic's ``filter_key``)."""

    state: tuple[str, ...]
    action: str
    views: tuple[str, ...] = ()
    episodes: int = 0
    image_size: tuple[int, int] | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    # Start at the selected episode of this index (``episodes`` then counts from it): a unit of a
    # parallel import reads one range. Only importers with ``reads_ranges = True`` are given one.
    first: int = 0


@dataclass
class SourceEpisode:
    """One episode as read: every selected key, time-major (vectors (T, D), views (T, H, W, 3) uint8),
    and its instruction if the source has one. ``problem`` set (arrays empty) means the episode could
    not be read (a missing video file, frames that do not match the timestamps): the kit stops naming
    it, or skips it and notes why when asked to."""

    index: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    instruction: str | None = None
    problem: str | None = None


class Importer(Protocol):
    """What ``hpt_register_importers`` registers."""

    name: str  # the format's name on the command line: "lerobot", "robomimic", "rlds"
    # Optional: True when ``episodes`` honours ``Selection.first`` (skipping without decoding), so
    # `hpt-kit import --workers` may split the source into ranges; importers without it import serially.
    reads_ranges: bool
    # Optional: ``environment(spec, note) -> Embodiment``, the simulator the source's metadata names
    # (robomimic's env_args), rebuilt for a dataset it imported from the dataset's spec and its
    # ``notes.import`` (``note``): an embodiment whose ``rollout`` plays a policy there with
    # observations made as the import made them. Raises :class:`NoEnvironment` naming why it cannot.
    # `hpt-kit eval` and `hpt-kit experiment` evaluate such a dataset online through it.

    def detect(self, path: Path) -> bool:
        """Whether ``path`` looks like this format (cheap: metadata only)."""
        ...

    def describe(self, path: Path) -> SourceInfo:
        """What the source holds, read from its metadata (and at most one episode)."""
        ...

    def episodes(self, path: Path, selection: Selection) -> Iterator[SourceEpisode]:
        """The selected keys of each episode in order, one episode in memory at a time."""
        ...


IMPORTER_MEMBERS = ("detect", "describe", "episodes")
