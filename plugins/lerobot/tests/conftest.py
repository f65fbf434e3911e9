"""Datasets written once per session in both LeRobot layouts; the tests that break one copy it first.

``lerobot_fixtures`` (the writer) is loaded by file path under its own module name so that the
tests import it whatever the import mode and beside other plugins' test folders.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest


def _load_writer():
    name = "lerobot_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


writer = _load_writer()
CAMERA_FPS = {"wrist": 20}  # the wrist camera records at twice the dataset's 10 Hz


@pytest.fixture(scope="session")
def v21(tmp_path_factory) -> Path:
    """v2.1, H.264, per-episode files, list-typed vectors, a 20 fps camera."""
    return writer.write_lerobot(tmp_path_factory.mktemp("lerobot") / "v21", version="v2.1", codec="h264",
                                camera_fps=CAMERA_FPS)


@pytest.fixture(scope="session")
def v3(tmp_path_factory) -> Path:
    """v3.0, AV1, two episodes per data file and mp4, parquet row groups straddling episodes,
    fixed-size-list vectors, a 20 fps camera and a camera stored as PNG images in the rows."""
    return writer.write_lerobot(tmp_path_factory.mktemp("lerobot") / "v3", version="v3.0", codec="av1", episodes=4,
                                camera_fps=CAMERA_FPS, image_cameras=("top",), fixed_size_lists=True,
                                episodes_per_file=2, rows_per_group=5)


@pytest.fixture(scope="session")
def v3_h264(tmp_path_factory) -> Path:
    """v3.0, H.264 with B-frames and keyframes 5 frames apart: episodes start inside a GOP, so the
    reader must seek back to a keyframe and decode forward."""
    return writer.write_lerobot(tmp_path_factory.mktemp("lerobot") / "v3h264", version="v3.0", codec="h264",
                                episodes=3, steps=13, cameras=("front",), gop=5)


@pytest.fixture
def copy_of(tmp_path):
    """A writable copy of a session dataset, for the tests that break it."""

    def copy(root: Path) -> Path:
        return Path(shutil.copytree(root, tmp_path / root.name))

    return copy
