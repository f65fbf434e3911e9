"""``hpt-kit pretrain`` and ``hpt-kit transfer``: the one training loop, from a recipe."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer

RunDir = Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/<run.name>).")]
Steps = Annotated[int | None, typer.Option(min=1, help="Override train.steps.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the run directory's latest checkpoint.")]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a recipe setting before validation, e.g. --set train.lr=3e-4 --set datasets[1].weight=2 "
        "(repeatable; values are TOML, bare words are strings; options such as --steps still win).",
    ),
]


def _run(recipe, out: Path | None, resume: bool) -> None:
    from hpt_kit.cli.output import console, training_progress
    from hpt_kit.core.registry import load_registry
    from hpt_kit.train.loop import train
    from hpt_kit.weights.checkpoint import latest_checkpoint, read_checkpoint

    run_dir = out or Path(recipe.run.out or f"runs/{recipe.run.name}")
    registry = load_registry()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 talks
        train(recipe, run_dir, registry, resume=resume)
        return
    start = 0
    if resume and (latest := latest_checkpoint(run_dir)) is not None:
        start = read_checkpoint(latest).step
    with training_progress(recipe.train.steps, start) as (on_log, on_convert):
        result = train(recipe, run_dir, registry, resume=resume, on_log=on_log, on_convert=on_convert)
    val = ", ".join(f"{k} {v:.4f}" for k, v in result.val_loss.items()) or "n/a"
    console.print(f"done: step {result.step}, validation loss {val}", highlight=False)
    console.print(f"checkpoint: {result.checkpoint}", highlight=False)


def pretrain(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE.toml", help="Pre-training recipe.")],
    out: RunDir = None,
    steps: Steps = None,
    resume: Resume = False,
    sets: Sets = None,
) -> None:
    """Pre-train a trunk on the recipe's mixture of embodiments (missing datasets are converted first)."""
    from hpt_kit.core.overrides import load_recipe

    recipe = load_recipe(recipe_path, sets or ())
    if recipe.transfer.trunk:
        raise typer.BadParameter(f"{recipe_path} has transfer.trunk set; use `hpt-kit transfer`", param_hint="RECIPE")
    if steps:
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=steps))
    _run(recipe, out, resume)


def transfer(
    recipe_path: Annotated[
        Path | None, typer.Argument(metavar="[RECIPE.toml]", help="Transfer recipe (optional).")
    ] = None,
    embodiment: Annotated[str | None, typer.Option(help="The new embodiment to attach.")] = None,
    trunk: Annotated[str | None, typer.Option(help="Pre-trained trunk: run dir, checkpoint or hf://OWNER/REPO.")] = None,
    freeze_trunk: Annotated[
        bool | None, typer.Option("--freeze-trunk/--no-freeze-trunk", help="Train only stem and head.")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset folder for the embodiment.")] = None,
    episodes: Annotated[int | None, typer.Option(min=1, help="Use only the first N episodes (demonstrations).")] = None,
    lora: Annotated[
        int | None,
        typer.Option(
            metavar="RANK",
            min=0,
            help="Also train LoRA adapters of this rank on the frozen trunk's linear maps (peft; stored "
            "beside the checkpoint, merged when loaded). Sets transfer.lora_rank; 0 = none.",
        ),
    ] = None,
    steps: Steps = None,
    out: RunDir = None,
    resume: Resume = False,
    sets: Sets = None,
) -> None:
    """Attach a new stem and head to a pre-trained trunk and train them (trunk frozen or fine-tuned)."""
    from hpt_kit.core.overrides import load_recipe, override_recipe
    from hpt_kit.core.recipe import DatasetEntry, Recipe, RunSection, TrainSection

    if recipe_path is not None:
        recipe = load_recipe(recipe_path, sets or ())
    else:
        if embodiment is None:
            raise typer.BadParameter("give a RECIPE.toml or --embodiment", param_hint="--embodiment")
        recipe = Recipe(
            datasets=(DatasetEntry(embodiment),),
            run=RunSection(name=f"transfer-{embodiment}"),
            train=TrainSection(steps=1000, warmup_steps=50, lr=1e-3),
            source="<command line>",
        )
        recipe = override_recipe(recipe, sets or ())
    datasets = recipe.datasets
    if embodiment is not None:
        chosen = [d for d in datasets if d.embodiment == embodiment] or [DatasetEntry(embodiment)]
        datasets = (chosen[0],)
    if data is not None or episodes is not None:
        if len(datasets) != 1:
            raise typer.BadParameter("--data/--episodes need a single embodiment; add --embodiment")
        d = datasets[0]
        datasets = (
            dataclasses.replace(
                d,
                path=str(data) if data is not None else d.path,
                max_episodes=episodes if episodes is not None else d.max_episodes,
            ),
        )
    section = recipe.transfer
    try:
        if trunk is not None:
            section = dataclasses.replace(section, trunk=trunk)
        if freeze_trunk is not None:
            section = dataclasses.replace(section, freeze_trunk=freeze_trunk)
        if lora is not None:
            section = dataclasses.replace(section, lora_rank=lora)
    except ValueError as exc:  # e.g. LoRA on a trunk that is not frozen
        raise typer.BadParameter(str(exc), param_hint="--lora/--freeze-trunk") from None
    if not section.trunk:
        raise typer.BadParameter("no trunk: give --trunk or set transfer.trunk in the recipe", param_hint="--trunk")
    train = dataclasses.replace(recipe.train, steps=steps) if steps else recipe.train
    recipe = dataclasses.replace(recipe, datasets=datasets, transfer=section, train=train)
    _run(recipe, out, resume)


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
    app.command("transfer")(transfer)
