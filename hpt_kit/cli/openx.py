"""``hpt-kit openx``: the Open X-Embodiment catalogue that ships with the rlds importer plugin
(``hpt-kit-rlds``): ``list`` shows it, ``import NAME SRC`` imports one dataset with its entry's keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

openx_app = typer.Typer(help="The Open X-Embodiment datasets of HPT's pre-training mixture (needs hpt-kit-rlds).", no_args_is_help=True)


def _catalogue() -> Any:
    try:
        from hpt_kit_rlds import openx
    except ImportError:
        raise typer.BadParameter(
            "the Open-X catalogue ships with the rlds importer: pip install -e plugins/rlds", param_hint="openx"
        ) from None
    return openx, openx.load_catalogue()


def _imported(path: Path) -> bool:
    from hpt_kit.data.store import Dataset, DatasetError

    try:
        Dataset(path)
    except (DatasetError, OSError):
        return False
    return True


def list_command(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """The catalogue: TFDS name, embodiment, robot, episodes, rate, state/action sizes, paper weight,
    whether it is imported under the data root."""
    from hpt_kit.data.convert import dataset_root

    openx, catalogue = _catalogue()
    root = dataset_root()
    rows = []
    for e in catalogue.entries:
        path = openx.imported_path(e, root)
        rows.append({
            "name": e.name, "version": e.version, "embodiment": e.embodiment, "robot": e.robot,
            "episodes": e.episodes or None, "control_hz": e.control_hz, "state_dim": e.state_dim,
            "action_dim": e.action_dim, "cameras": list(e.cameras), "paper_weight": e.paper_weight or None,
            "published": e.published, "hub": list(e.hub), "imported": _imported(path), "path": str(path),
            "unresolved": list(e.unresolved),
        })  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"catalogue": str(catalogue.path), "data_root": str(root), "datasets": rows}))
        return
    from rich.table import Table

    from hpt_kit.cli.output import stdout_console

    table = Table("name", "embodiment", "robot", "episodes", "Hz", "state", "action", "cameras", "paper weight", "imported")
    for r in rows:
        table.add_row(
            r["name"], r["embodiment"], r["robot"] or "?", str(r["episodes"] or "?"), f"{r['control_hz']:g}",
            str(r["state_dim"]) if r["state_dim"] else "none", str(r["action_dim"]), str(len(r["cameras"])),
            f"{r['paper_weight']:g}" if r["paper_weight"] else "?", "yes" if r["imported"] else "no",
        )  # fmt: skip
    console = stdout_console()
    console.print(table)
    console.print(f"{catalogue.path}; '?': not pinned down from a reachable source (see the entry's `unresolved`)", markup=False, highlight=False)


def import_command(
    name: Annotated[str, typer.Argument(help="The catalogue entry: TFDS name (taco_play) or embodiment (openx-taco-play).")],
    source: Annotated[str, typer.Argument(help="The TFDS version folder (NAME/VERSION) or hf://datasets/OWNER/NAME[@REVISION].")],
    image_size: Annotated[int, typer.Option(min=1, metavar="N", help="Scale every camera to N x N.")] = 128,
    episodes: Annotated[int, typer.Option(min=0, help="Import the first N episodes (0: all).")] = 0,
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable or invalid episodes (noted) instead of stopping.")] = False,
    text_encoder: Annotated[str, typer.Option(help="Text encoder for the instructions; none drops them.")] = "hash-ngram",
    out: Annotated[Path | None, typer.Option(help="Dataset folder (default: $HPT_KIT_DATA/EMBODIMENT.zarr).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset (only once the new one is complete).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Import one Open-X dataset with its catalogue entry's state, action parts, cameras, language key
    and control rate, after checking the source's features.json against the entry."""
    from hpt_kit.cli.importing import _import_progress, _print_result
    from hpt_kit.core.registry import load_registry
    from hpt_kit.data.importing import ImportOptions, import_dataset

    openx, catalogue = _catalogue()
    entry = catalogue.entry(name)
    opts = ImportOptions(
        name=entry.embodiment,
        state=(openx.STATE_KEY,),
        action=openx.ACTION_KEY,
        episodes=episodes,
        image_size=image_size,
        skip_bad=skip_bad,
        text_encoder=text_encoder,
    )
    registry = load_registry(embodiments=False)
    with _import_progress(f"import {entry.name}") as (on_start, on_episode):
        path = import_dataset(openx.OpenXSource(entry), source, out, opts, registry, overwrite, on_episode, on_start)
    _print_result(path, as_json)


def import_all_command(
    root: Annotated[Path, typer.Argument(help="A folder holding the copied datasets as NAME/VERSION (gsutil cp's layout).")],
    image_size: Annotated[int, typer.Option(min=1, metavar="N", help="Scale every camera to N x N.")] = 128,
    episodes: Annotated[int, typer.Option(min=0, help="Import the first N episodes of each (0: all).")] = 0,
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable or invalid episodes (noted) instead of stopping.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Import every catalogue entry found under ROOT that is not imported yet under the data root;
    say for each entry what was done or why not."""
    from hpt_kit.cli.importing import _import_progress
    from hpt_kit.core.registry import load_registry
    from hpt_kit.data.convert import dataset_root
    from hpt_kit.data.importing import ImportOptions, import_dataset

    openx, catalogue = _catalogue()
    registry = load_registry(embodiments=False)
    done: dict[str, str] = {}
    for e in catalogue.entries:
        source = Path(root) / e.name / e.version
        target = openx.imported_path(e, dataset_root())
        if _imported(target):
            done[e.name] = f"already imported: {target}"
        elif not source.is_dir():
            done[e.name] = f"skipped: no {source} (gsutil -m cp -r {e.published} {Path(root) / e.name}/)"
        else:
            opts = ImportOptions(name=e.embodiment, state=(openx.STATE_KEY,), action=openx.ACTION_KEY,
                                 episodes=episodes, image_size=image_size, skip_bad=skip_bad)
            with _import_progress(f"import {e.name}") as (on_start, on_episode):
                path = import_dataset(openx.OpenXSource(e), str(source), None, opts, registry, False, on_episode, on_start)
            done[e.name] = f"imported: {path}"
    if as_json:
        typer.echo(json.dumps(done))
        return
    for name, what in done.items():
        typer.echo(f"{name}: {what}")


def register(app: typer.Typer) -> None:
    openx_app.command("list")(list_command)
    openx_app.command("import")(import_command)
    openx_app.command("import-all")(import_all_command)
    app.add_typer(openx_app, name="openx")
