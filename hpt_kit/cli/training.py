"""``hpt-kit pretrain`` and ``hpt-kit transfer``: the one training loop, from a recipe."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from hpt_kit.core.recipe import Recipe

RunDir = Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/<run.name>).")]
Steps = Annotated[int | None, typer.Option(min=1, help="Override train.steps.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the run directory's latest checkpoint.")]
Threads = Annotated[
    int | None,
    typer.Option(
        min=0,
        metavar="N",
        help="torch compute threads. Sets train.threads; 0 (default): the cores divided by the kit training processes "
        "running on this machine, re-checked as they come and go.",
    ),
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a recipe setting before validation, e.g. --set train.lr=3e-4 --set datasets[1].weight=2 "
        "(repeatable; values are TOML, bare words are strings; options such as --steps still win).",
    ),
]


def _run(recipe, out: Path | None, resume: bool, registry=None) -> None:
    from hpt_kit.cli.output import console, training_progress
    from hpt_kit.core.registry import load_registry
    from hpt_kit.train.loop import train
    from hpt_kit.weights.checkpoint import latest_checkpoint, read_checkpoint

    run_dir = out or Path(recipe.run.out or f"runs/{recipe.run.name}")
    registry = registry or load_registry()
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
    threads: Threads = None,
    plan: Annotated[
        bool,
        typer.Option("--plan", help="Only show what the run will cost (data, tokens, epochs, memory, time, missing datasets); nothing is trained or converted."),
    ] = False,
    ranks: Annotated[int, typer.Option(min=1, help="With --plan: the ranks (GPUs) the run will use.")] = 1,
    samples_per_s: Annotated[
        float, typer.Option(min=0, metavar="N", help="With --plan: one rank's training samples/s (default: the bench figure for the trunk preset).")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="With --plan: print one JSON object.")] = False,
) -> None:
    """Pre-train a trunk on the recipe's mixture of embodiments (missing datasets are converted first)."""
    from hpt_kit.core.overrides import load_recipe

    recipe = load_recipe(recipe_path, sets or ())
    if recipe.transfer.trunk:
        raise typer.BadParameter(f"{recipe_path} has transfer.trunk set; use `hpt-kit transfer`", param_hint="RECIPE")
    if steps:
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=steps))
    if plan:
        _plan(recipe, ranks, samples_per_s, as_json)
        return
    _run(_with_threads(recipe, threads), out, resume)


def _plan(recipe, ranks: int, samples_per_s: float, as_json: bool) -> None:
    from hpt_kit.cli.plan import missing_hint, print_plan
    from hpt_kit.core.registry import load_registry
    from hpt_kit.train.plan import plan_run

    print_plan(plan_run(recipe, missing_hint(load_registry()), ranks=ranks, samples_per_s=samples_per_s), as_json)


def transfer(
    recipe_path: Annotated[
        Path | None, typer.Argument(metavar="[RECIPE.toml]", help="Transfer recipe (optional).")
    ] = None,
    embodiment: Annotated[str | None, typer.Option(help="The new embodiment to attach.")] = None,
    trunk: Annotated[str | None, typer.Option(help="Pre-trained trunk: run dir, checkpoint or hf://OWNER/REPO.")] = None,
    trunk_checkpoint: Annotated[
        str | None,
        typer.Option(
            metavar="STEP|best|PATH",
            help="Which checkpoint of the --trunk run directory: a step number, best, latest or a folder under its "
            "checkpoints. Default: latest, refused when it is damaged.",
        ),
    ] = None,
    freeze_trunk: Annotated[
        bool | None, typer.Option("--freeze-trunk/--no-freeze-trunk", help="Train only stem and head.")
    ] = None,
    from_scratch: Annotated[
        bool,
        typer.Option(
            "--from-scratch",
            help="The scratch baseline: no pre-trained trunk; a randomly initialised trunk (--trunk-preset) trains with the stem and head.",
        ),
    ] = False,
    trunk_preset: Annotated[
        str | None, typer.Option(metavar="PRESET", help="With --from-scratch: the trunk's size (tiny, small, base, ...). Default: the recipe's trunk preset.")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset folder for the embodiment.")] = None,
    episodes: Annotated[int | None, typer.Option(min=1, help="Use only the first N episodes (demonstrations). Default: all of the dataset, or the recipe's datasets[].max_episodes.")] = None,
    lora: Annotated[
        int | None,
        typer.Option(
            metavar="RANK",
            min=0,
            help="Also train LoRA adapters of this rank on the frozen trunk's linear maps (peft; stored "
            "beside the checkpoint, merged when loaded). Sets transfer.lora_rank; 0 = none.",
        ),
    ] = None,
    trunk_lr_scale: Annotated[
        float | None,
        typer.Option(
            metavar="X",
            help="While the trunk trains (--no-freeze-trunk or --from-scratch), its learning rate is X times the rest's (e.g. 0.1). Sets transfer.trunk_lr_scale; default 1.",
        ),
    ] = None,
    val_episodes: Annotated[
        str | None,
        typer.Option(
            metavar="F|I,J,...",
            help="The held-out episodes offline evaluation reports on: a fraction below 1 (drawn with the run's seed) or "
            "episode indices, e.g. 0,4,7. Sets train.val_fraction or datasets[].val_episodes. Default: 0.2, and at least "
            "3 episodes while two thirds still train (train.val_min_episodes).",
        ),
    ] = None,
    steps: Steps = None,
    out: RunDir = None,
    resume: Resume = False,
    sets: Sets = None,
    threads: Threads = None,
) -> None:
    """Attach a new stem and head to a pre-trained trunk and train them (trunk frozen or fine-tuned),
    or train the same network from a random trunk (--from-scratch) as the baseline to compare with."""
    from hpt_kit.core.overrides import load_recipe, override_recipe
    from hpt_kit.core.recipe import DatasetEntry, Recipe, RunSection, TrunkSection, read_toml
    from hpt_kit.train.budget import VAL_MIN_EPISODES, transfer_train

    if recipe_path is not None:
        recipe = load_recipe(recipe_path, sets or ())
    else:
        if embodiment is None:
            raise typer.BadParameter("give a RECIPE.toml or --embodiment", param_hint="--embodiment")
        recipe = Recipe(
            datasets=(DatasetEntry(embodiment),),
            run=RunSection(name=f"transfer-{embodiment}"),
            train=transfer_train(1000, val_min_episodes=VAL_MIN_EPISODES),  # steps: --steps or the budget from the data, below
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
        if trunk_lr_scale is not None:
            section = dataclasses.replace(section, trunk_lr_scale=trunk_lr_scale)
        if from_scratch:
            if trunk is not None:
                raise typer.BadParameter("--from-scratch trains a random trunk; drop --trunk", param_hint="--from-scratch")
            if freeze_trunk:
                raise typer.BadParameter("--from-scratch: a random trunk must train; drop --freeze-trunk", param_hint="--freeze-trunk")
            section = dataclasses.replace(section, trunk="", freeze_trunk=False, from_scratch=True)
    except ValueError as exc:  # e.g. LoRA on a trunk that is not frozen, or on a scratch trunk
        raise typer.BadParameter(str(exc), param_hint="--lora/--freeze-trunk/--from-scratch/--trunk-lr-scale") from None
    if trunk_preset is not None:
        if not section.from_scratch:
            raise typer.BadParameter(
                "a pre-trained trunk brings its own size; --trunk-preset goes with --from-scratch", param_hint="--trunk-preset"
            )
        try:
            recipe = dataclasses.replace(recipe, trunk=TrunkSection(preset=trunk_preset))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--trunk-preset") from None
    if not section.trunk and not section.from_scratch:
        raise typer.BadParameter("no trunk: give --trunk (or --from-scratch) or set transfer.trunk in the recipe", param_hint="--trunk")
    if trunk_checkpoint is not None and not section.trunk:
        raise typer.BadParameter("--trunk-checkpoint chooses a checkpoint of --trunk; give --trunk", param_hint="--trunk-checkpoint")
    recipe = dataclasses.replace(recipe, datasets=datasets, transfer=section)
    if section.trunk and (not resume or trunk_checkpoint is not None):  # a damaged trunk run is refused before any data is read
        from hpt_kit.train.setup import run_mode
        from hpt_kit.weights.trunks import check_trunk

        run_mode(recipe)  # the recipe's own contradictions are named first
        recipe = dataclasses.replace(recipe, transfer=dataclasses.replace(section, trunk=check_trunk(section.trunk, trunk_checkpoint)))
    if val_episodes is not None:
        recipe = _with_held_out(recipe, val_episodes)
    registry = None
    steps_set = any(s.split("=", 1)[0].strip() == "train.steps" for s in sets or ())
    if steps:
        train = _transfer_train(recipe, steps) if recipe_path is None else dataclasses.replace(recipe.train, steps=steps)
        recipe = dataclasses.replace(recipe, train=train)
    elif not steps_set and (recipe_path is None or "steps" not in read_toml(recipe_path).get("train", {})):
        from hpt_kit.core.registry import load_registry

        registry = load_registry()
        recipe = _with_step_budget(recipe, registry, from_file=recipe_path is not None)
    _run(_with_threads(recipe, threads), out, resume, registry)


def _with_step_budget(recipe, registry, from_file: bool):
    """The recipe with a step budget from its datasets' size (``hpt_kit.train.budget``), converting
    missing datasets first; said on the console, since no option or recipe key chose it."""
    from hpt_kit.cli.output import console, conversion_progress
    from hpt_kit.train.budget import PASSES, step_budget, training_windows
    from hpt_kit.train.setup import open_datasets

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise typer.BadParameter("under torchrun give --steps (the budget from the data is worked out in one process)", param_hint="--steps")
    with conversion_progress() as on_convert:
        datasets = open_datasets(recipe, registry, on_convert)
    val_fraction = recipe.train.val_fraction
    windows = sum(
        training_windows(datasets[e.embodiment], e.max_episodes, val_fraction, recipe.run.seed, recipe.train.val_min_episodes, e.val_episodes)
        for e in recipe.datasets
    )
    budget = step_budget(windows, recipe.train.batch_size)
    train = dataclasses.replace(recipe.train, steps=budget) if from_file else _transfer_train(recipe, budget)
    console.print(
        f"steps: {budget} (no --steps: about {PASSES} draws of each of {windows} training windows at batch "
        f"{train.batch_size}; warm-up {train.warmup_steps}, validation every {train.val_every})",
        highlight=False,
    )
    return dataclasses.replace(recipe, train=train)


def _with_threads(recipe: Recipe, threads: int | None) -> Recipe:
    """The recipe with ``--threads`` as ``train.threads`` (None: the recipe's)."""
    if threads is None:
        return recipe
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, threads=threads))


def _transfer_train(recipe, steps: int):
    """The transfer defaults for ``steps``, keeping the recipe's device and held-out choices."""
    from hpt_kit.train.budget import transfer_train

    cfg = recipe.train
    return transfer_train(steps, device=cfg.device, val_fraction=cfg.val_fraction, val_min_episodes=cfg.val_min_episodes)


def _with_held_out(recipe, given: str):
    """``--val-episodes``: a fraction below 1 sets ``train.val_fraction``; indices set the one
    dataset's ``val_episodes``."""
    text = given.strip()
    try:
        if "," not in text and "." in text:
            fraction = float(text)
            if not 0 <= fraction < 1:
                raise ValueError(f"a fraction must be in [0, 1), got {fraction}")
            return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, val_fraction=fraction))
        indices = tuple(int(part) for part in text.split(",") if part.strip())
        if len(recipe.datasets) != 1:
            raise ValueError("episode indices need a single embodiment; add --embodiment")
        entry = dataclasses.replace(recipe.datasets[0], val_episodes=indices)
    except ValueError as exc:
        raise typer.BadParameter(f"{given!r}: {exc}", param_hint="--val-episodes") from None
    return dataclasses.replace(recipe, datasets=(entry,))


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
    app.command("transfer")(transfer)
