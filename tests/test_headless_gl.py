"""`import hpt_kit` picks a headless OpenGL backend for MuJoCo where no display is and none was set,
and leaves a chosen one (or a display) alone."""

import ctypes.util
import os
import subprocess
import sys

import pytest

SHOW = "import os, hpt_kit; print(os.environ.get('MUJOCO_GL'), os.environ.get('PYOPENGL_PLATFORM'))"


def backend(**env):
    base = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run([sys.executable, "-c", SHOW], env={**base, **env}, capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the automatic choice is made on Linux")
def test_a_headless_backend_is_chosen_only_when_none_is_set_and_no_display():
    expected = "egl" if os.path.exists("/dev/nvidia0") and ctypes.util.find_library("EGL") else "osmesa"
    if expected == "osmesa" and not ctypes.util.find_library("OSMesa"):
        pytest.skip("neither libEGL with a GPU nor libOSMesa is installed")
    assert backend() == [expected, expected]
    assert backend(MUJOCO_GL="egl") == ["egl", "egl"]  # kept, and PyOpenGL follows it
    assert backend(DISPLAY=":0") == ["None", "None"]  # a display: MuJoCo's default stays
