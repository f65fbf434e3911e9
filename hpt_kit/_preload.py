"""Load order of native libraries that cannot share a process in the other order, and the headless
OpenGL backend chosen before MuJoCo is imported.

Without a display (no ``DISPLAY`` or ``WAYLAND_DISPLAY``) and without ``MUJOCO_GL`` set, MuJoCo's
default (GLFW) cannot render. ``choose_headless_gl`` then sets ``MUJOCO_GL`` and
``PYOPENGL_PLATFORM``: ``egl`` where an NVIDIA GPU and libEGL are present, else ``osmesa`` where
libOSMesa is installed (CPU rendering), else nothing. A value already set is never changed.

With ``MUJOCO_GL=osmesa`` MuJoCo's GL layer (PyOpenGL) loads libOSMesa with RTLD_GLOBAL, and the LLVM
symbols it exports make triton's own LLVM crash (segfault) when triton loads later, which torch does
on its first optimizer or ``torch.compile`` call. Loading triton first is harmless and takes ~0.3 s,
so it is done only when OSMesa rendering is selected and triton is installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def choose_headless_gl() -> str | None:
    """Set the headless backend as above; returns the one chosen (None: left as it was)."""
    if os.environ.get("MUJOCO_GL") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        if os.environ.get("MUJOCO_GL") in ("egl", "osmesa"):
            os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
        return None
    if not sys.platform.startswith("linux"):
        return None
    import ctypes.util

    if os.path.exists("/dev/nvidia0") and ctypes.util.find_library("EGL"):
        chosen = "egl"
    elif ctypes.util.find_library("OSMesa"):
        chosen = "osmesa"
    else:
        return None
    os.environ["MUJOCO_GL"] = chosen
    os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return chosen


def preload_for_osmesa() -> None:
    if "osmesa" not in (os.environ.get("MUJOCO_GL", ""), os.environ.get("PYOPENGL_PLATFORM", "")):
        return
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401
