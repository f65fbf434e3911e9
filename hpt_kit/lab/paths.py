"""Paths that an experiment's OUT folder records, so the folder works wherever it is moved or copied
(``mv out out2``, rsync to another machine): what lies inside OUT is recorded relative to it, what
lies outside (a reused trunk, ``hf://`` locations) as it is; results.json files written before,
with absolute paths, still read."""

from __future__ import annotations

from pathlib import Path


def portable(path: str | Path, out: Path) -> str:
    """``path`` as OUT's files record it: relative to ``out`` when inside it (``runs/T/K4/frozen-seed0``),
    else absolute; a remote location (``hf://…``) unchanged."""
    if "://" in str(path):
        return str(path)
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(Path(out).resolve()).as_posix() or "."
    except ValueError:
        return str(absolute)


def located(recorded: str, out: Path) -> str:
    """Where a path that OUT's files record is now: a relative one under ``out``, an absolute or
    remote one as recorded."""
    if "://" in recorded or Path(recorded).is_absolute():
        return recorded
    return str(Path(out) / recorded)
