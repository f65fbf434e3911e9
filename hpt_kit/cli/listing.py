"""``hpt-kit list``: what the installed plugins registered, and what went wrong."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show installed embodiments (with their plugin's distribution and version), stems, heads, text
    encoders and plugin errors."""
    from hpt_kit.core.registry import load_registry

    registry = load_registry()
    rows = []
    for name, reg in sorted(registry.embodiments.items()):
        e = reg.embodiment
        rows.append(
            {
                "name": name,
                "plugin": reg.plugin.name,
                "distribution": reg.plugin.distribution,
                "version": reg.plugin.version,
                "modalities": list(e.observation.field_shapes()),
                "stems": [s.modality for s in e.stems],
                "state_dim": e.observation.state_dim,
                "action_dim": e.action.dim,
                "observation_horizon": e.observation_horizon,
                "action_horizon": e.action_horizon,
                "head": e.head.kind,
                "description": e.description,
            }
        )
    errors = [{"plugin": x.plugin, "item": x.item, "reason": x.reason} for x in registry.errors]
    if as_json:
        plugins = [{"name": p.name, "distribution": p.distribution, "version": p.version} for p in registry.plugins]
        out = {
            "embodiments": rows,
            "plugins": plugins,
            "stems": sorted(registry.stems),
            "heads": sorted(registry.heads),
            "text_encoders": [
                {
                    "name": n,
                    "plugin": t.plugin.name,
                    "distribution": t.plugin.distribution,
                    "version": t.plugin.version,
                }
                for n, t in sorted(registry.text_encoders.items())
            ],
            "errors": errors,
        }
        typer.echo(json.dumps(out))
        return
    from rich.table import Table

    from hpt_kit.cli.output import stdout_console

    console = stdout_console()
    table = Table(title="embodiments")
    for col in ("name", "distribution", "version", "modalities", "state", "action", "horizons (obs/act)", "head"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            r["distribution"],
            r["version"],
            ", ".join(r["modalities"]),
            str(r["state_dim"]),
            str(r["action_dim"]),
            f"{r['observation_horizon']}/{r['action_horizon']}",
            r["head"],
        )
    console.print(table)
    console.print(f"stems: {', '.join(sorted(registry.stems))}    heads: {', '.join(sorted(registry.heads))}")
    encoders = [f"{n} ({t.plugin.distribution})" for n, t in sorted(registry.text_encoders.items())]
    console.print(f"text encoders: {', '.join(encoders) or 'none'}")
    for x in registry.errors:
        console.print(f"[red]plugin error[/red] {x}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
