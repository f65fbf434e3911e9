"""The options that choose which checkpoint of a run a command reads (``--checkpoint``, ``--best``).

Without them a command reads the run's latest checkpoint and refuses it when it is damaged; an older
one is used only when chosen here (``hpt_kit.weights.checkpoint.resolve_checkpoint``)."""

from __future__ import annotations

from typing import Annotated

import typer

HELP = (
    "Which checkpoint of RUN_DIR: a step number (20), best, latest, or a folder under RUN_DIR/checkpoints. "
    "Default: latest, refused when it is damaged."
)

Choice = Annotated[str | None, typer.Option("--checkpoint", metavar="STEP|best|PATH", help=HELP)]
Best = Annotated[
    bool, typer.Option("--best", help="The run's best checkpoint (lowest validation loss, checkpoints/best); same as --checkpoint best.")
]


def choice(checkpoint: str | None, best: bool = False) -> str | None:
    """One choice from ``--checkpoint`` and ``--best`` (None: the latest)."""
    if best and checkpoint not in (None, "best"):
        raise typer.BadParameter(f"--best and --checkpoint {checkpoint} choose two checkpoints; give one", param_hint="--best")
    return "best" if best else checkpoint


def describe(ckpt) -> str:
    """The line saying which checkpoint a command uses."""
    return f"checkpoint {ckpt.path} (step {ckpt.step})"


def better_best(ckpt) -> str | None:
    """When a run's latest checkpoint was read by default and its validation loss is worse than
    ``checkpoints/best``'s, the line that says so and how to use the best one (None otherwise)."""
    import json
    import math

    from hpt_kit.weights.best import best_checkpoint, score
    from hpt_kit.weights.checkpoint import DESCRIPTION

    run = ckpt.path.parent.parent
    if ckpt.path.parent.name != "checkpoints" or (best := best_checkpoint(run)) is None or best == ckpt.path:
        return None
    try:
        described = json.loads((best / DESCRIPTION).read_text())
    except (OSError, ValueError):
        return None
    latest = score(ckpt.description.get("metrics", {}).get("val_loss", {}))
    better = score(described.get("metrics", {}).get("val_loss", {}))
    if math.isnan(latest) or math.isnan(better) or better >= latest:
        return None
    return (
        f"warning: step {ckpt.step} (latest) has validation loss {latest:.4g}, worse than step {described.get('step')}'s "
        f"{better:.4g} (checkpoints/best): pass --best to use that one"
    )
