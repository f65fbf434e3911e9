"""``hpt-kit add-embodiment``: scaffold a new embodiment plugin package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def add_embodiment(
    name: Annotated[str, typer.Argument(help="Python identifier for the new embodiment, e.g. my_arm.")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to write the package (default: ./NAME; embodiments/NAME inside the kit's own checkout).")
    ] = None,
) -> None:
    """Write a complete, installable embodiment plugin that works out of the box."""
    from hpt_kit.scaffold import scaffold_embodiment

    try:
        path = scaffold_embodiment(name, directory)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME") from None
    typer.echo(f"created {path}")
    typer.echo(f"next: pip install -e {path} && hpt-kit list && hpt-kit convert {name}")


def register(app: typer.Typer) -> None:
    app.command("add-embodiment")(add_embodiment)
