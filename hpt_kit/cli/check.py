"""``hpt-kit check``: the embodiment contract of installed plugins, from the command line.

What a plugin's own test does with :func:`hpt_kit.contract.check_embodiment`, for an embodiment as
the kit finds it: through its entry point, so a plugin that was never installed (or whose
registration failed) is caught here too.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from hpt_kit.core.registry import Registry


def check_command(
    names: Annotated[list[str], typer.Argument(metavar="EMBODIMENT...", help="Installed embodiments to check.")],
    episodes: Annotated[int, typer.Option(min=1, help="Episodes to convert and validate.")] = 2,
    rollouts: Annotated[int, typer.Option(min=1, help="Rollout episodes driven by a random controller.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the conversion, the rollouts and the random actions.")] = 0,
    expert: Annotated[
        int, typer.Option(metavar="N", min=0, help="Also roll the scripted expert out on N episodes (0 = no).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check installed embodiments against the kit's contract: the spec, converted episodes (fields,
    shapes, finite values), the rollout runner with a random controller, parallel rollouts when the
    plugin offers them, and optionally the scripted expert's success rate. Exits 1 on the first
    embodiment that fails, naming it and what is wrong."""
    from hpt_kit.core.registry import load_registry

    registry = load_registry()
    missing = [n for n in names if n not in registry.embodiments]
    if missing:
        raise typer.BadParameter(_unknown(registry, missing), param_hint="EMBODIMENT")
    reports = []
    for name in names:
        report = _check(registry, name, episodes, rollouts, seed, expert)
        reports.append(report)
        if not as_json:
            _print(report)
        if not report["ok"]:
            break
    if as_json:
        typer.echo(json.dumps({"embodiments": reports}))
    if not all(r["ok"] for r in reports):
        raise typer.Exit(1)


def _unknown(registry: Registry, missing: list[str]) -> str:
    """Why names are not registered: the plugin errors recorded against them, the names known."""
    known = ", ".join(sorted(registry.embodiments)) or "none"
    lines = [f"not registered: {', '.join(missing)}"]
    lines += [f"{e.plugin}: {e.item + ': ' if e.item else ''}{e.reason}" for e in registry.errors]
    lines.append(f"known: {known}. Is the plugin installed (pip install -e PATH) and listed by `hpt-kit list`?")
    return "\n".join(lines)


def _check(registry: Registry, name: str, episodes: int, rollouts: int, seed: int, expert: int) -> dict[str, Any]:
    from hpt_kit.contract import check_embodiment
    from hpt_kit.core.spec import RolloutRequest
    from hpt_kit.core.stats import wilson_interval

    reg = registry.embodiments[name]
    emb = reg.embodiment
    out: dict[str, Any] = {"embodiment": name, "distribution": reg.plugin.distribution, "version": reg.plugin.version}
    start = time.perf_counter()
    try:
        report = check_embodiment(emb, episodes=episodes, rollout_episodes=rollouts, seed=seed)
    except Exception as exc:  # noqa: BLE001 - a plugin's own exception is the finding, reported by name
        return {**out, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out |= {
        "ok": True,
        "seconds": round(time.perf_counter() - start, 2),
        "episode_lengths": [len(ep["action"]) for ep in report.episodes],
        "fields": {k: list(v.shape[1:]) for k, v in report.episodes[0].items()},
        "camera_rendered": bool(report.rendered),
        "parallel_rollouts": emb.rollout_envs is not None,
        "random_rollouts": len(report.rollout.successes),
        "random_success_rate": report.rollout.success_rate,
        "controller_calls": report.controller_calls,
    }
    if expert:
        if emb.expert_rollout is None:
            return {**out, "ok": False, "error": "--expert: the plugin gives no expert_rollout"}
        result = emb.expert_rollout(RolloutRequest(episodes=expert, seed=seed))
        k = sum(result.successes)
        out |= {"expert_episodes": len(result.successes), "expert_success_rate": result.success_rate,
                "expert_success_ci95": list(wilson_interval(k, len(result.successes)))}
    return out


def _print(report: dict[str, Any]) -> None:
    from hpt_kit.cli.output import stdout_console

    console = stdout_console()
    name = f"{report['embodiment']} ({report['distribution']} {report['version']})"
    if not report["ok"]:
        console.print(f"FAILED {name}: {report['error']}", highlight=False, markup=False, soft_wrap=True)
        return
    fields = ", ".join(f"{k} {tuple(v)}" for k, v in report["fields"].items())
    lines = [
        f"ok {name} in {report['seconds']:.2f} s",
        f"  converted {len(report['episode_lengths'])} episodes, lengths {report['episode_lengths']}; per step: {fields}",
        f"  random controller: {report['random_rollouts']} rollouts, {report['controller_calls']} actions asked, "
        f"success {report['random_success_rate']:.0%}",
        "  optional camera: rendered on request" if report["camera_rendered"] else "",
        "  parallel rollouts (rollout_envs): same episodes as rollout" if report["parallel_rollouts"] else
        "  parallel rollouts: not offered (eval --workers runs this embodiment serially)",
    ]
    if "expert_success_rate" in report:
        lo, hi = report["expert_success_ci95"]
        lines.append(
            f"  scripted expert: {report['expert_success_rate']:.1%} of {report['expert_episodes']} episodes "
            f"(95% interval {lo:.1%} to {hi:.1%})"
        )
    for line in filter(None, lines):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("check")(check_command)
