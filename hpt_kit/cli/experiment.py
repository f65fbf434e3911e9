"""``hpt-kit experiment transfer``: the HPT transfer experiment in one command; ``report``: its results analysed again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from hpt_kit.cli.scaling import scaling_experiment

experiment_app = typer.Typer(help="Experiments that measure what pre-training buys.", no_args_is_help=True)


@experiment_app.command("transfer")
def transfer_experiment(
    spec: Annotated[Path, typer.Argument(metavar="EXPERIMENT.toml", help="Experiment file.")] = Path("recipes/experiment.toml"),
    out: Annotated[Path, typer.Option(help="Output folder (runs, results.json, results.md, val_loss.png).")] = Path("runs/experiment"),
    scale: Annotated[float, typer.Option(min=0.0, help="Multiply training steps and evaluation episodes (e.g. 10 on a GPU).")] = 1.0,
    seeds: Annotated[int | None, typer.Option(min=1, help="Use seeds 0..N-1 instead of the file's.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a setting of the experiment file before validation, e.g. --set experiment.steps=100 (repeatable).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Evaluation worker processes per policy, one simulator each (default: the CPU cores; 1 = serial)."),
    ] = None,
    run_workers: Annotated[
        int,
        typer.Option(min=1, help="Transfer runs at once after pre-training, each in its own process with its share of the cores "
                     "(with --address: at most N Ray tasks at a time). Results equal the sequential run's."),
    ] = 1,
    address: Annotated[
        str | None, typer.Option(metavar="HOST:PORT", help="Run the transfer runs on this running Ray cluster (default: $RAY_ADDRESS).")
    ] = None,
) -> None:
    """Pre-train on a mixture, then train held-out embodiments from scratch, on the frozen trunk and fine-tuned."""
    from rich.text import Text

    from hpt_kit.cli.output import console, stdout_console
    from hpt_kit.engine import ray_address
    from hpt_kit.lab.experiment import load_experiment, run_experiment

    section = load_experiment(spec, sets or ())
    if seeds is not None:
        section = dataclasses.replace(section, seeds=tuple(range(seeds)))
    result = run_experiment(
        section,
        out,
        scale,
        on_stage=lambda msg: console.print(Text.assemble(("experiment:", "bold"), f" {msg}"), highlight=False),
        workers=workers,
        run_workers=run_workers,
        address=ray_address(address),
    )
    from rich.markdown import Markdown

    stdout_console().print(Markdown((result.out / "results.md").read_text()))
    plots = ", ".join(p.name for p in sorted(result.out.glob("*.png")))
    console.print(f"wrote {result.out / 'results.json'}, {result.out / 'results.md'} and {plots} in {result.out}", highlight=False)


@experiment_app.command("report")
def report_experiment(
    results: Annotated[Path, typer.Argument(metavar="RESULTS.json", help="An experiment's results.json (or its OUT folder).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the re-analysed results.json instead of its Markdown report.")] = False,
) -> None:
    """Analyse a finished experiment again from its recorded episodes (both intervals of every
    comparison, the table, leave-one-out); prints the report, trains and evaluates nothing."""
    import json

    from hpt_kit.lab.experiment import markdown, reanalysed

    path = results / "results.json" if results.is_dir() else results
    try:
        result = json.loads(path.read_text())
        if not isinstance(result, dict):
            raise ValueError(f"{path}: not an experiment's results (a JSON object expected)")
        again = reanalysed(result, str(path))
    except ValueError as exc:  # JSONDecodeError included
        message = str(exc) if str(exc).startswith(str(path)) else f"{path}: not JSON ({exc})"
        raise typer.BadParameter(message, param_hint="RESULTS.json") from None
    typer.echo(json.dumps(again, indent=2) if as_json else markdown(again))


experiment_app.command("scaling")(scaling_experiment)


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")
