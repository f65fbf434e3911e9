"""``hpt-kit convert``: run an embodiment's converter into a dataset store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def convert_command(
    name: Annotated[str, typer.Argument(help="Embodiment name (see `hpt-kit list`).")],
    episodes: Annotated[int, typer.Option(min=1, help="Episodes to convert.")] = 50,
    out: Annotated[Path | None, typer.Option(help="Dataset folder (default: $HPT_KIT_DATA/NAME.zarr).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the converter.")] = 0,
    render: Annotated[bool, typer.Option(help="Ask the converter to render camera images.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset (only once the new one is complete).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Convert an embodiment's raw data (e.g. a scripted expert) into a validated zarr dataset."""
    from hpt_kit.cli.output import conversion_progress
    from hpt_kit.data.convert import convert
    from hpt_kit.data.store import Dataset
    from hpt_kit.registry import load_registry

    registry = load_registry()
    embodiment = registry.embodiment(name)
    with conversion_progress() as on_convert:
        path = convert(
            embodiment,
            out,
            episodes=episodes,
            seed=seed,
            render=render,
            overwrite=overwrite,
            on_episode=on_convert(name, episodes),
            registry=registry,
        )
    ds = Dataset(path)
    summary = {
        "embodiment": name,
        "path": str(path),
        "episodes": ds.num_episodes,
        "steps": ds.num_steps,
        "notes": ds.notes,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"wrote {ds.num_episodes} episodes ({ds.num_steps} steps) of {name} to {path}")
        for k, v in ds.notes.items():
            typer.echo(f"  {k}: {v}")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)
