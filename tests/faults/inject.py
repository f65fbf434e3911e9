"""Run the real ``hpt-kit`` command with one fault injected at an exact point, as a crash would hit it.

    python tests/faults/inject.py FAULT [hpt-kit arguments...]

The process kills itself with SIGKILL (no cleanup, no ``finally``) at the named point of the kit's own
code path; everything before that point ran for real. Faults:

- ``kill-in-checkpoint-write:STEP``: after the weights of step STEP's checkpoint are on disk, before
  its training state is written and the folder renamed into place.
- ``kill-before-latest:STEP``: after step STEP's checkpoint folder is in place, before ``latest`` moves.
- ``kill-in-prune``: while an old checkpoint folder is being deleted (one file gone).
- ``kill-between-renames``: while a dataset replaces another, between its two renames.
- ``slow-plugin-import:MARKER``: the ``mujoco`` plugin's import waits (creating the file MARKER when
  it starts) and turns any exception raised meanwhile, Ctrl-C included, into an ImportError, as a
  library with a bare ``except:`` around an import does. Not a kill: the signal comes from the test.
"""

from __future__ import annotations

import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(fault: str) -> None:
    import shutil

    import torch

    from hpt_kit.weights import checkpoint

    name, _, arg = fault.partition(":")
    if name == "kill-in-checkpoint-write":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if f".step_{int(arg):08d}.tmp-" in str(f):
                _die()
            return real_save(obj, f, *args, **kwargs)

        checkpoint.torch.save = save
    elif name == "kill-before-latest":
        real_symlink = os.symlink

        def symlink(src, dst, *args, **kwargs):
            if str(src) == f"step_{int(arg):08d}" and ".latest.tmp-" in str(dst):
                _die()
            return real_symlink(src, dst, *args, **kwargs)

        checkpoint.os.symlink = symlink
    elif name == "kill-in-prune":
        real_rmtree = shutil.rmtree

        def rmtree(path, *args, **kwargs):
            if ".del-" in str(path):
                os.unlink(sorted(os.scandir(path), key=lambda e: e.name)[0].path)
                _die()
            return real_rmtree(path, *args, **kwargs)

        checkpoint.shutil.rmtree = rmtree
    elif name == "kill-between-renames":
        from hpt_kit.data import store

        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            real_replace(src, dst, *args, **kwargs)
            if ".old-" in str(dst):
                _die()

        store.os.replace = replace
    elif name == "slow-plugin-import":
        import time
        from importlib import metadata

        real_load = metadata.EntryPoint.load

        def load(self):
            if self.group == "hpt_kit" and self.name == "mujoco":
                try:
                    open(arg, "w").close()
                    time.sleep(30)
                except BaseException:  # noqa: BLE001 - what a careless library does with the interruption
                    raise ImportError("the plugin was half imported") from None
            return real_load(self)

        metadata.EntryPoint.load = load
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    _install(sys.argv[1])
    sys.argv = ["hpt-kit", *sys.argv[2:]]
    from hpt_kit.cli.app import main

    main()
