"""Progress of a fanned-out ``convert`` or ``import``: units, episodes, frames/s and the ETA."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any


def _line(p: Any) -> str:
    eta = "?" if p.eta_s is None else f"{p.eta_s:.0f} s"
    resumed = f", {p.resumed_units} from before" if p.resumed_units else ""
    return (
        f"units {p.units_done}/{p.units}{resumed}, episodes {p.episodes_done}/{p.episodes}, "
        f"{p.frames_per_s:.0f} frames/s, ETA {eta} ({p.engine})"
    )


@contextmanager
def fanout_progress(label: str):
    """Yields ``on_progress(Progress)`` for :mod:`hpt_kit.data.fanout`: a bar over the units on a
    terminal, else one line per finished unit."""
    from hpt_kit.cli.output import console, make_progress

    with make_progress() as progress:
        task = progress.add_task(label, total=None, info="")

        def on_progress(p: Any) -> None:
            progress.update(task, total=p.units, completed=p.units_done, info=_line(p))
            if not console.is_terminal:
                console.print(f"{label}: {_line(p)}", highlight=False)

        yield on_progress
