"""``hpt-kit report``: plots and a one-page summary of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hpt_kit.cli.choose import Choice


def report_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory (metrics.jsonl, recipe.toml).")],
    out: Annotated[Path | None, typer.Option(help="Folder for the plots and report.md (default: RUN_DIR/report).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the written paths as one JSON object.")] = False,
    checkpoint: Choice = None,
) -> None:
    """Plot a run's training and validation loss per embodiment, learning rate and throughput, and write report.md."""
    from hpt_kit.lab.report import write_report

    try:
        report = write_report(run_dir, out, checkpoint)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="RUN_DIR") from None
    if as_json:
        typer.echo(json.dumps({"markdown": str(report.markdown), "plots": [str(p) for p in report.plots]}))
        return
    from rich.markdown import Markdown

    from hpt_kit.cli.output import console, stdout_console

    stdout_console().print(Markdown(report.markdown.read_text()))
    console.print(f"wrote {report.markdown} and {', '.join(p.name for p in report.plots)}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
