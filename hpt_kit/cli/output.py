"""Console output: tables on stdout, progress on stderr.

Every console is made with ``markup=False``: paths, names and error messages are user text and are
never read as rich markup (``runs/a[x]/b`` prints as it is); styling is given as a ``style`` or as
:class:`rich.text.Text` spans.

On a terminal progress is a live rich bar; when stderr is a file or a pipe (CI, logs) every training
log record becomes one plain line instead, so the log shows the run as it goes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, width=None if sys.stderr.isatty() else 160, markup=False)


def count(n: int, noun: str) -> str:
    """``1 episode``, ``3 episodes``: a count with its noun in the right number."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def stdout_console() -> Console:
    """Tables for stdout; wide enough to stay readable when piped or logged (no terminal width)."""
    return Console(markup=False) if sys.stdout.isatty() else Console(width=160, markup=False)


def make_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _plain_lines(label: str, total: int) -> Callable[[int], None]:
    """Off a terminal, where no bar is drawn: a line every 10% of ``total`` and at the end, so a log
    shows a long conversion as it goes."""
    every = max(1, total // 10)

    def done(n: int) -> None:
        if not console.is_terminal and (n % every == 0 or n == total):
            console.print(f"{label}: {n}/{total}", highlight=False)

    return done


@contextmanager
def conversion_progress():
    """Yields ``on_convert(name, episodes) -> on_episode(i, steps)`` for the data layer."""
    with make_progress() as progress:

        def on_convert(name: str, episodes: int) -> Callable[[int, int], None]:
            task = progress.add_task(f"convert {name}", total=episodes, info="")
            line = _plain_lines(f"convert {name}", episodes)

            def on_episode(i: int, steps: int) -> None:
                progress.update(task, completed=i + 1, info=f"{steps} steps")
                line(i + 1)

            return on_episode

        yield on_convert


@contextmanager
def training_progress(total: int, start: int = 0):
    """Yields ``(on_log, on_convert)`` callbacks that drive one bar with loss and samples/s."""
    with make_progress() as progress:
        task = progress.add_task("train", total=total, completed=start, info="")
        val = {"text": ""}  # the latest validation, with its step: the bar shows it until the next one

        def on_log(record: dict[str, Any]) -> None:
            if "val_loss" in record:
                v = " ".join(f"{k}={x:.4f}" for k, x in record["val_loss"].items())
                val["text"] = f"val@{record['step']} {v}"
                if not console.is_terminal:  # once, as its own line: never repeated on later steps' lines
                    console.print(f"step {record['step']}/{total}  validation {v}", highlight=False)
            if "loss" in record:
                info = f"loss {record['loss']:.4f}  {record['samples_per_s']:.0f} samples/s"
                progress.update(task, completed=record["step"], info=f"{info}  {val['text']}")
                if not console.is_terminal:
                    console.print(f"step {record['step']}/{total}  {info}", highlight=False)

        def on_convert(name: str, episodes: int) -> Callable[[int, int], None]:
            ctask = progress.add_task(f"convert {name}", total=episodes, info="")
            line = _plain_lines(f"convert {name}", episodes)

            def on_episode(i: int, steps: int) -> None:
                progress.update(ctask, completed=i + 1)
                line(i + 1)

            return on_episode

        yield on_log, on_convert
