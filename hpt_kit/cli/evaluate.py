"""``hpt-kit eval``: roll a trained policy out in its embodiment's environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def eval_command(
    location: Annotated[str, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help="Run directory, checkpoint or hf://.")],
    embodiment: Annotated[str | None, typer.Option(help="Which of the checkpoint's embodiments (default: the first).")] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Rollout episodes.")] = 20,
    seed: Annotated[int, typer.Option(help="First rollout seed (kept apart from conversion seeds).")] = 1000,
    execute_steps: Annotated[
        int | None,
        typer.Option(min=0, help="Chunk steps executed before re-planning (0 = all). Default: the run's recipe."),
    ] = None,
    temporal_ensemble: Annotated[
        float | None,
        typer.Option(
            "--temporal-ensemble",
            metavar="M",
            min=0.0,
            help="Predict every step and average overlapping chunks with weights exp(-M*i), oldest first "
            "(ACT uses 0.01); 0 = off. Excludes --execute-steps. Default: the run's recipe.",
        ),
    ] = None,
    video: Annotated[Path | None, typer.Option(help="Folder for rollout videos.")] = None,
    expert: Annotated[bool, typer.Option("--expert", help="Also roll out the scripted expert, for scale.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Report the success rate of a checkpoint's policy (and optionally of the scripted expert)."""
    import numpy as np

    from hpt_kit.core.registry import load_registry
    from hpt_kit.core.spec import RolloutRequest
    from hpt_kit.models.hpt import HPT
    from hpt_kit.policy import Policy
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(location)
    registry = load_registry()
    model = HPT.from_checkpoint(ckpt, registry)
    name = embodiment or next(iter(model.specs))
    # Chunk execution: an option given here wins; otherwise the recipe's [eval] section decides.
    planned = ckpt.description.get("recipe", {}).get("eval", {})
    if execute_steps is None and temporal_ensemble is None:
        execute_steps = int(planned.get("execute_steps", 0))
        temporal_ensemble = float(planned.get("temporal_ensemble", 0.0))
    execute_steps = execute_steps or 0
    temporal_ensemble = temporal_ensemble or 0.0
    if execute_steps and temporal_ensemble:
        raise typer.BadParameter(
            "choose --execute-steps or --temporal-ensemble, not both", param_hint="--temporal-ensemble"
        )
    policy = Policy(model, name, execute_steps, ensemble=temporal_ensemble or None)
    emb = registry.embodiment(name)
    request = RolloutRequest(episodes=episodes, seed=seed, video_dir=video, render=policy.needs_images)
    result = emb.rollout(policy, request)
    out = {
        "embodiment": name,
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "episodes": episodes,
        "seed": seed,
        "execute_steps": None if temporal_ensemble else policy.execute_steps,
        "temporal_ensemble": temporal_ensemble,
        "success_rate": result.success_rate,
        "successes": list(result.successes),
        "mean_return": float(np.mean(result.returns)) if result.returns else None,
        "videos": list(result.videos),
        "details": dict(result.details),
    }
    if expert:
        if emb.expert_rollout is None:
            raise typer.BadParameter(f"embodiment {name!r} has no scripted expert", param_hint="--expert")
        ex = emb.expert_rollout(RolloutRequest(episodes=episodes, seed=seed))
        out["expert_success_rate"] = ex.success_rate
    if as_json:
        typer.echo(json.dumps(out))
        return
    from rich.table import Table

    from hpt_kit.cli.output import stdout_console

    mode = f"temporal ensemble m={temporal_ensemble:g}" if temporal_ensemble else f"{policy.execute_steps} steps per chunk"
    table = Table(title=f"{name}: {episodes} episodes from seed {seed}, {mode}")
    table.add_column("policy")
    table.add_column("success rate", justify="right")
    table.add_column("mean return", justify="right")
    table.add_row(f"HPT ({ckpt.path.name})", f"{result.success_rate:.1%}", _fmt_return(out["mean_return"]))
    if expert:
        table.add_row("scripted expert", f"{out['expert_success_rate']:.1%}", _fmt_return(float(np.mean(ex.returns)) if ex.returns else None))
    stdout_console().print(table)


def _fmt_return(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
