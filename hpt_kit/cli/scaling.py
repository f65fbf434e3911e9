"""``hpt-kit experiment scaling``: held-out loss against pre-training data and trunk size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def scaling_experiment(
    spec: Annotated[Path, typer.Argument(metavar="SCALING.toml", help="Study file (its \\[scaling] table).")] = Path("recipes/scaling.toml"),
    out: Annotated[Path, typer.Option(help="Output folder (runs, results.json, results.md, scaling_*.png).")] = Path("runs/scaling"),
    scale: Annotated[float, typer.Option(min=0.0, help="Multiply the pre-training steps of every point (e.g. 10 on a GPU).")] = 1.0,
    seeds: Annotated[int | None, typer.Option(min=1, help="Use seeds 0..N-1 instead of the file's.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a setting of the study file, e.g. --set scaling.steps=100 (repeatable)."),
    ] = None,
    run_workers: Annotated[
        int,
        typer.Option(min=1, help="Pre-trainings at once after the datasets are converted, each in its own process at the study's "
                     "thread count (with --address: at most N Ray tasks at a time). Results equal the sequential run's."),
    ] = 1,
    address: Annotated[
        str | None, typer.Option(metavar="HOST:PORT", help="Run the pre-trainings on this running Ray cluster (default: $RAY_ADDRESS).")
    ] = None,
) -> None:
    """Pre-train with fewer or more datasets, less or more data and smaller or larger trunks; plot the held-out loss."""
    import dataclasses

    from rich.markdown import Markdown
    from rich.text import Text

    from hpt_kit.cli.output import console, stdout_console
    from hpt_kit.engine import ray_address
    from hpt_kit.lab.scaling import load_scaling, run_scaling

    section = load_scaling(spec, sets or ())
    if seeds is not None:
        section = dataclasses.replace(section, seeds=tuple(range(seeds)))
    say = lambda msg: console.print(Text.assemble(("scaling:", "bold"), f" {msg}"), highlight=False)  # noqa: E731
    run_scaling(section, out, on_stage=say, scale=scale, run_workers=run_workers, address=ray_address(address))
    stdout_console().print(Markdown((out / "results.md").read_text()))
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'} and the plots scaling_*.png in {out}")
