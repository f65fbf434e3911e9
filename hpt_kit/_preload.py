"""Load order of native libraries that cannot share a process in the other order.

With ``MUJOCO_GL=osmesa`` MuJoCo's GL layer (PyOpenGL) loads libOSMesa with RTLD_GLOBAL, and the LLVM
symbols it exports make triton's own LLVM crash (segfault) when triton loads later, which torch does
on its first optimizer or ``torch.compile`` call. Loading triton first is harmless and takes ~0.3 s,
so it is done only when OSMesa rendering is selected and triton is installed.
"""

from __future__ import annotations

import importlib.util
import os


def preload_for_osmesa() -> None:
    if "osmesa" not in (os.environ.get("MUJOCO_GL", ""), os.environ.get("PYOPENGL_PLATFORM", "")):
        return
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401
