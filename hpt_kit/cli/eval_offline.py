"""``hpt-kit eval`` of an embodiment with no simulator (an imported dataset): the action error on the
run's held-out episodes, named, beside the trivial baselines on the same windows
(``hpt_kit.train.offline``); ``--replay EPISODE`` draws one episode's predicted against recorded
actions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

MAX_ROWS = 16  # dimensions listed one per row in the table; beyond, only the overall row


def offline(ckpt: Any, model: Any, name: str, as_json: bool, replay: int | None = None, plot: Path | None = None) -> None:
    """Report offline metrics (or, with ``replay``, draw one episode) for ``name`` of ``ckpt``."""
    from hpt_kit.train.offline import held_out, held_out_episodes, offline_metrics

    if name not in model.specs:
        known = ", ".join(model.specs)
        raise typer.BadParameter(f"the checkpoint has no embodiment {name!r}; it has {known}", param_hint="--embodiment")
    ds, val = held_out(ckpt.description, name, model.specs[name])
    held = held_out_episodes(ds, val)
    if replay is not None:
        _replay(ckpt, model, name, ds, replay, held, plot, as_json)
        return
    metrics = offline_metrics(model, name, val)
    out = {"embodiment": name, "checkpoint": str(ckpt.path), "step": ckpt.step, "mode": "offline", "dataset": str(ds.path),
           "held_out_episodes": len(held), "held_out": held, **metrics}
    if as_json:
        typer.echo(json.dumps(out))
        return
    print_offline(out)


def _replay(ckpt: Any, model: Any, name: str, ds: Any, episode: int, held: list[int], plot: Path | None, as_json: bool) -> None:
    from hpt_kit.cli.output import stdout_console
    from hpt_kit.train.offline import replay

    path = plot or Path(f"replay-{name}-episode{episode:03d}.png")
    try:
        result = replay(model, name, ds, episode, path, held)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--replay") from None
    result = {"embodiment": name, "checkpoint": str(ckpt.path), "step": ckpt.step, **result}
    if as_json:
        typer.echo(json.dumps(result))
        return
    where = "held out" if result["held_out"] else "a training episode: the policy has seen it"
    mean = sum(result["first_action_mae"]) / len(result["first_action_mae"])
    stdout_console().print(
        f"episode {episode} of {ds.path} ({where}), {result['steps']} steps: predicted against recorded actions "
        f"in {path} (first-step error {mean:.4g}, mean over dimensions)",
        highlight=False, markup=False, soft_wrap=True,
    )


def print_offline(out: dict[str, Any]) -> None:
    """The table: one row per action dimension and one overall, the policy and each baseline's
    first-step error (and whole-chunk error) side by side; then the intervals over episodes."""
    from rich.table import Table

    from hpt_kit.cli.output import stdout_console
    from hpt_kit.train.offline import BASELINE_TITLES

    console = stdout_console()
    n = out["held_out_episodes"]
    console.print(
        f"{out['embodiment']} has no simulator (a data-only embodiment): offline metrics on {n} held-out "
        f"episode{'' if n == 1 else 's'} {out['held_out']} of {out['dataset']} ({out['windows']} windows, each "
        f"episode from its second step), not a success rate; validation loss {out['val_loss']:.5f}",
        highlight=False, markup=False, soft_wrap=True,
    )
    baselines = {k: v for k, v in out["baselines"].items() if v["applicable"]}
    columns = [("policy", out), *((BASELINE_TITLES[k], v) for k, v in baselines.items())]
    table = Table(title="mean absolute action error, robot units: first step (whole chunk)")
    table.add_column("dimension")
    for title, _ in columns:
        table.add_column(title, justify="right")
    dims = out["dimensions"]
    if len(dims) <= MAX_ROWS:
        for d, label in enumerate(dims):
            table.add_row(label, *(f"{v['first_action_mae'][d]:.4g} ({v['action_mae'][d]:.4g})" for _, v in columns))
    table.add_row("overall (mean)", *(f"{v['mean_first_action_mae']:.4g} ({v['mean_action_mae']:.4g})" for _, v in columns),
                  end_section=True)
    table.add_row("95% interval, over episodes", *(_interval(v["ci95"]) for _, v in columns))
    console.print(table)
    for key, entry in out["baselines"].items():
        title = BASELINE_TITLES[key]
        if not entry["applicable"]:
            console.print(f"{title}: not applicable ({entry['reason']})", highlight=False, markup=False, soft_wrap=True)
            continue
        if key == "hold_position":
            console.print(f"{title}: {entry['reason']}", highlight=False, markup=False, soft_wrap=True)
        console.print(_verdict(title, entry["policy_minus_baseline"]), highlight=False, markup=False, soft_wrap=True)


def _interval(ci: list[float] | None) -> str:
    return "n/a (1 episode)" if ci is None else f"{ci[0]:.4g} to {ci[1]:.4g}"


def _verdict(title: str, diff: list[float] | None) -> str:
    """The policy against one baseline, first-step error paired by episode, in words."""
    if diff is None:
        return f"policy - {title}: one held-out episode, no interval (hold out more with transfer --val-episodes)"
    mean, low, high = diff
    word = ("better than" if high < 0 else "worse than" if low > 0 else "not distinguishable from")
    return f"policy - {title}: {mean:+.4g} (95% interval {low:+.4g} to {high:+.4g}, paired by episode): the policy is {word} {title}"
