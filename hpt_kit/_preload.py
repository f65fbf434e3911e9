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

``interrupt_start_up`` covers the ``hpt-kit`` command's first second, its imports, before its
``main`` installs the handlers that unwind a run: Ctrl-C there exits 130 ("interrupted") and
SIGTERM 143 ("terminated") instead of a traceback, as they do later. Nothing is open yet to clean up.

``hold_signals_while_importing`` holds SIGINT and SIGTERM back while torch, torchvision or MuJoCo
runs its top-level import, and raises them again the moment it returns. Those imports call C++ that runs
Python (torch's ``_c10d_init`` imports modules, for one): a KeyboardInterrupt raised by a handler in
there cannot cross the C++ frames, and the process aborts ("terminate called after throwing an
instance of 'pybind11::error_already_set'", SIGABRT) instead of exiting 130. A Ctrl-C in the first
import of torch (about a second) is therefore answered when it ends.
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


def interrupt_start_up() -> bool:
    """In the ``hpt-kit`` command (the console script, or ``python -m hpt_kit`` as torchrun runs it),
    until ``hpt_kit.cli.app.main`` replaces them: SIGINT and SIGTERM while it loads print
    "interrupted" or "terminated" and exit 130 or 143. Returns whether the handlers were installed;
    importing the kit as a library changes nothing."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    command = os.path.basename(sys.argv[0]) if sys.argv else ""
    as_module = any(a == "-m" and b == "hpt_kit" for a, b in zip(argv, argv[1:]))
    if command != "hpt-kit" and not as_module:
        return False
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return False

    def stop(signum: int, frame: object) -> None:
        os.write(2, b"interrupted\n" if signum == signal.SIGINT else b"terminated\n")
        os._exit(130 if signum == signal.SIGINT else 143)

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, stop)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop)
    return True


SIGNAL_HELD_IMPORTS = frozenset({"torch", "torchvision", "mujoco"})


class _SignalsHeld:
    """A meta path finder that finds nothing itself: for the top-level packages named, it takes the
    spec the other finders give and runs that module's ``exec_module`` with SIGINT and SIGTERM only
    noted; each noted signal is raised again, once, when the import returns, so the handlers in place
    before (the command's, the default) answer it then. The handlers are swapped rather than the
    signals blocked: a signal mask is per thread, and a Ctrl-C sent to the process may land on any
    thread the import has started."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        run = getattr(loader, "exec_module", None)
        if run is None or not hasattr(loader, "__dict__"):
            return spec

        def exec_module(module):
            import signal
            import threading

            if threading.current_thread() is not threading.main_thread():
                return run(module)
            noted: list[int] = []

            def note(signum, frame):
                if signum not in noted:
                    noted.append(signum)

            before = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                run(module)
            finally:
                for sig, handler in before.items():
                    signal.signal(sig, handler)
                for sig in noted:
                    signal.raise_signal(sig)  # now answered by the handler restored above

        loader.exec_module = exec_module  # this module's own loader object; its type and the rest stay
        return spec


def hold_signals_while_importing(names: frozenset[str] = SIGNAL_HELD_IMPORTS) -> bool:
    """Install the finder above, first on ``sys.meta_path`` (once; from the main thread, where Python
    runs signal handlers). Returns whether it is in place."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return False
    if not any(isinstance(f, _SignalsHeld) for f in sys.meta_path):
        sys.meta_path.insert(0, _SignalsHeld(frozenset(names)))
    return True
