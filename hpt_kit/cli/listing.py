"""``hpt-kit list``: what the installed plugins registered, and what went wrong."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show installed embodiments (with their plugin's distribution and version), imported datasets
    (data-only embodiments), stems, heads, text encoders, importers, exporters and plugin errors."""
    from hpt_kit.core.registry import load_registry

    registry = load_registry()
    rows = [_row(reg.embodiment, reg.plugin.name, reg.plugin.distribution, reg.plugin.version) for _, reg in sorted(registry.embodiments.items())]
    rows += _imported_rows(set(registry.embodiments))
    errors = [{"plugin": x.plugin, "item": x.item, "reason": x.reason} for x in registry.errors]
    if as_json:
        typer.echo(json.dumps(_as_json(registry, rows, errors)))
        return
    _print(registry, rows)


def _row(e, plugin: str, distribution: str, version: str, data_only: bool = False, path: str = "") -> dict[str, Any]:
    return {
        "name": e.name,
        "plugin": plugin,
        "distribution": distribution,
        "version": version,
        "data_only": data_only,
        "path": path,
        "modalities": list(e.observation.field_shapes()),
        "stems": [s.modality for s in e.stems],
        "state_dim": e.observation.state_dim,
        "action_dim": e.action.dim,
        "observation_horizon": e.observation_horizon,
        "action_horizon": e.action_horizon,
        "head": e.head.kind,
        "description": e.description,
    }


def _imported_rows(registered: set[str]) -> list[dict[str, Any]]:
    """Imported datasets in the dataset root: embodiments with data and no simulator (no rollout)."""
    from hpt_kit.data.importing import IMPORT_NOTE, imported_datasets

    rows = []
    for ds in imported_datasets():
        if ds.name in registered:
            continue
        fmt = ds.notes[IMPORT_NOTE].get("format", "?")
        rows.append(_row(ds.spec, f"imported ({fmt})", "data only", ds.notes.get("kit_version", ""), True, str(ds.path)))
    return rows


def _as_json(registry, rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> dict[str, Any]:
    def owned(table) -> list[dict[str, str]]:
        return [
            {"name": n, "plugin": t.plugin.name, "distribution": t.plugin.distribution, "version": t.plugin.version}
            for n, t in sorted(table.items())
        ]

    return {
        "embodiments": rows,
        "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version} for p in registry.plugins],
        "stems": sorted(registry.stems),
        "heads": sorted(registry.heads),
        "text_encoders": owned(registry.text_encoders),
        "importers": owned(registry.importers),
        "exporters": owned(registry.exporters),
        "errors": errors,
    }


def _print(registry, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from hpt_kit.cli.output import stdout_console

    console = stdout_console()
    table = Table(title="embodiments")
    for col in ("name", "distribution", "version", "modalities", "state", "action", "horizons (obs/act)", "head"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            r["distribution"] + (f" ({r['plugin']}, no rollout)" if r["data_only"] else ""),
            r["version"],
            ", ".join(r["modalities"]),
            str(r["state_dim"]),
            str(r["action_dim"]),
            f"{r['observation_horizon']}/{r['action_horizon']}",
            r["head"],
        )
    console.print(table)
    console.print(f"stems: {', '.join(sorted(registry.stems))}    heads: {', '.join(sorted(registry.heads))}", markup=False)
    encoders = [f"{n} ({t.plugin.distribution})" for n, t in sorted(registry.text_encoders.items())]
    console.print(f"text encoders: {', '.join(encoders) or 'none'}", markup=False)
    importers = [f"{n} ({t.plugin.distribution})" for n, t in sorted(registry.importers.items())]
    console.print(f"importers: {', '.join(importers) or 'none'}", markup=False)
    exporters = [f"{n} ({t.plugin.distribution})" for n, t in sorted(registry.exporters.items())]
    console.print(f"exporters: {', '.join(exporters) or 'none'}", markup=False)
    for x in registry.errors:
        console.print("plugin error ", style="red", end="")
        console.print(str(x), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
