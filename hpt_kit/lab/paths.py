"""Paths that an experiment's OUT folder records, so the folder works wherever it is moved or copied
(``mv out out2``, rsync to another machine): what lies inside OUT is recorded relative to it, what
lies outside (a reused trunk, ``hf://`` locations) as it is. Nothing in the kit reads these paths
back (``experiment report`` needs only the recorded episodes), so results.json files written before,
with absolute paths, still read; a reader joins a relative one to the folder results.json is in."""

from __future__ import annotations

from pathlib import Path


def portable(path: str | Path, out: Path) -> str:
    """``path`` as OUT's files record it: relative to ``out`` when inside it (``runs/T/K4/frozen-seed0``),
    else absolute; a remote location (``hf://…``) unchanged."""
    if "://" in str(path):
        return str(path)
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(Path(out).resolve()).as_posix()
    except ValueError:
        return str(absolute)

