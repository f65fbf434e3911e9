"""``hpt-kit pretrain RECIPE --plan``: the run's cost before it starts, as a table or one JSON object."""

from __future__ import annotations

import json
from typing import Any

import typer


def missing_hint(registry: Any) -> Any:
    """How to make a dataset the recipe names that is not on disk: ``hpt-kit convert`` for a plugin's
    embodiment, ``hpt-kit openx import`` for an Open-X catalogue entry (hpt-kit-rlds)."""
    from hpt_kit.train.plan import Missing, stem_tokens
    from hpt_kit.train.setup import run_spec

    try:
        from hpt_kit_rlds import openx
    except ImportError:
        openx = None
    catalogue = openx.load_catalogue() if openx is not None else None

    def hint(entry: Any) -> Missing:
        name = entry.embodiment
        out = f" --out {entry.path}" if entry.path else ""
        if name in registry.embodiments:
            flags = " --render" if entry.render else ""
            if entry.image_encoder:
                flags += f" --image-encoder {entry.image_encoder}"
            command = f"hpt-kit convert {name} --episodes {entry.episodes}{flags}{out}"
            note = "converted first by the run itself" if entry.convert else "convert = false: the run stops without it"
            return Missing(command, entry.episodes, stem_tokens(run_spec(registry.embodiment(name), entry)), note)
        if catalogue is not None and any(name in (e.name, e.embodiment) for e in catalogue.entries):
            e = catalogue.entry(name)
            command = f"gsutil -m cp -r {e.published} DIR/{e.name}/ && hpt-kit openx import {e.name} DIR/{e.name}/{e.version}{out}"
            return Missing(command, e.episodes, openx.tokens_per_sample(e), "an Open-X dataset: copy it, then import it")
        return Missing(f"no plugin embodiment or Open-X entry is named {name!r}: import it (hpt-kit import FORMAT SRC --name {name}){out}")

    return hint


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{seconds / 60:.1f} min"


def print_plan(plan: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(plan.to_dict()))
        return
    from rich.table import Table

    from hpt_kit.cli.output import stdout_console

    console = stdout_console()
    console.print(
        f"{plan.recipe}: trunk {plan.trunk}, {plan.steps:,} steps x batch {plan.batch_size:,} = {plan.samples:,} samples",
        highlight=False, markup=False,
    )  # fmt: skip
    table = Table("dataset", "episodes", "steps", "tokens/sample", "tokens", "share", "epochs", "on disk", "in memory")
    for d in plan.datasets:
        unknown = "missing" if not d.present else ""
        table.add_row(
            d.embodiment, f"{d.episodes:,}" if d.episodes else "?", f"{d.steps:,}" if d.present else unknown,
            str(d.tokens_per_sample or "?"), f"{d.tokens:,}" if d.tokens else "?", f"{d.share:.1%}",
            f"{d.epochs:.2f}" if d.present else "?", _size(d.disk_bytes) if d.present else unknown,
            _size(d.memory_bytes) if d.present else unknown,
        )  # fmt: skip
    table.add_row("total", "", "", "", f"{plan.tokens:,}", "100%", "", _size(plan.disk_bytes), _size(plan.memory_in_memory_bytes))
    console.print(table)
    present = sum(d.present for d in plan.datasets)
    loaded = _size(plan.memory_in_memory_bytes) if present else "unknown (no dataset on disk yet)"
    partial = f" (the {present} datasets on disk)" if 0 < present < len(plan.datasets) else ""
    console.print(f"memory per rank: {loaded} with stream = false{partial}, "
                  f"{_size(plan.memory_streaming_bytes)} with stream = true (stream_memory_mb per dataset); "
                  f"the recipe has stream = {str(plan.stream).lower()}", highlight=False, markup=False)
    if plan.wall_seconds:
        console.print(f"wall time: {_duration(plan.wall_seconds)} on {plan.ranks} rank(s), from {plan.throughput_source}; "
                      "the bench's standard model, scaled linearly with ranks", highlight=False, markup=False)
    else:
        console.print(f"wall time: unknown ({plan.throughput_source})", highlight=False, markup=False)
    for d in plan.datasets:
        if d.missing is not None:
            console.print(f"missing {d.embodiment} ({d.path}): {d.missing.command}" + (f"  # {d.missing.note}" if d.missing.note else ""),
                          highlight=False, markup=False, soft_wrap=True)
