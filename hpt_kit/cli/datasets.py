"""``hpt-kit data info|view|select|split|merge|export``: look into datasets, make new ones from their
episodes, write them in other formats."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

data_app = typer.Typer(
    help="Inspect and draw datasets; select, split and merge their episodes; export them to other formats.",
    no_args_is_help=True,
)

Source = Annotated[Path, typer.Argument(metavar="DATASET", help="A dataset folder (NAME.zarr).")]
Episodes = Annotated[str | None, typer.Option(metavar="LIST", help="Episode indices and ranges, e.g. 0,3,5-9.")]
Fraction = Annotated[float | None, typer.Option(help="A random share of the episodes (seeded by --seed).")]
Instruction = Annotated[
    str | None, typer.Option(metavar="TEXT", help="Episodes whose instruction contains TEXT (case-insensitive).")
]
Seed = Annotated[int, typer.Option(help="Seed of --fraction's draw.")]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing output dataset (once the new one is complete).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _choose(ds: Any, episodes: str | None, fraction: float | None, instruction: str | None, seed: int) -> list[int]:
    from hpt_kit.data.tools import choose_episodes

    try:
        return choose_episodes(ds, episodes, fraction, instruction, seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _write(what: str, total: int, write: Any) -> Path:
    from hpt_kit.cli.output import conversion_progress

    with conversion_progress() as on_convert:
        try:
            return write(on_convert(what, total))
        except ValueError as exc:
            from hpt_kit.core.spec import SpecError
            from hpt_kit.data.store import DatasetError

            if isinstance(exc, DatasetError | SpecError):
                raise
            raise typer.BadParameter(str(exc)) from None


def _written(paths: list[Path], as_json: bool) -> None:
    from hpt_kit.data.store import Dataset

    out = [{"path": str(p), "episodes": Dataset(p).num_episodes, "steps": Dataset(p).num_steps} for p in paths]
    if as_json:
        typer.echo(json.dumps(out[0] if len(out) == 1 else {"datasets": out}))
        return
    for o in out:
        typer.echo(f"wrote {o['episodes']} episodes ({o['steps']} steps) to {o['path']}")


@data_app.command("info")
def info_command(
    path: Annotated[str, typer.Argument(metavar="DATASET", help="A dataset folder (NAME.zarr) or hf://datasets/OWNER/NAME[@REV].")],
    stats: Annotated[bool, typer.Option(help="Compute field statistics (one pass over the data).")] = True,
    as_json: AsJson = False,
) -> None:
    """Episodes, steps, fields with shapes, dtypes and statistics, instructions, notes and size on disk."""
    from hpt_kit.data.store import Dataset
    from hpt_kit.data.tools import dataset_info
    from hpt_kit.weights.locations import resolve_dataset_location

    local = resolve_dataset_location(path) if path.startswith("hf://") else Path(path)
    info = dataset_info(Dataset(local), stats=stats)
    if as_json:
        typer.echo(json.dumps(info))
        return
    _print_info(info)


def _print_info(info: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    from hpt_kit.cli.output import stdout_console

    console = stdout_console()
    lengths = info["episode_length"]
    console.print(
        Text.assemble((str(info["path"]), "bold"), f": {info['embodiment']}, {info['episodes']} episodes, {info['steps']} steps "
        f"(length {lengths['min']}-{lengths['max']}, mean {lengths['mean']:.1f}), {info['control_hz']:g} Hz, "
        f"{info['bytes_on_disk'] / 1e6:.2f} MB on disk, made {info['created']} by hpt-kit {info['kit_version']}"
        + (f", in {len(info['shards'])} shards" if info.get("shards") else "")),
        highlight=False, soft_wrap=True,
    )
    table = Table(title="fields")
    for column in ("field", "shape per step", "dtype", "min", "max", "mean", "std"):
        table.add_column(column, justify="left" if column in ("field", "shape per step", "dtype") else "right")

    def fmt(v: Any) -> str:  # a vector of more than 4 dimensions as the range of its values (--json has each)
        if not isinstance(v, list):
            return f"{v:.3g}"
        return ", ".join(f"{x:.3g}" for x in v) if len(v) <= 4 else f"{min(v):.3g} .. {max(v):.3g}"

    for name, f in info["fields"].items():
        s = f.get("stats", {})
        table.add_row(name, str(tuple(f["shape"])), f["dtype"], *(fmt(s[k]) if s else "" for k in ("min", "max", "mean", "std")))
    console.print(table)
    for name, f in info["fields"].items():
        if f.get("names"):
            console.print(f"{name} {'views' if name == 'image' else 'names'}: {', '.join(f['names'])}", highlight=False, soft_wrap=True)
    console.print("vectors of more than 4 dimensions show the range over their dimensions (--json: each)", style="dim")
    if info["instructions"]:
        console.print("instructions: " + "; ".join(f"{t!r} x{n}" for t, n in info["instructions"].items()), highlight=False)
    notes = {k: v for k, v in info["notes"].items() if k not in ("instructions", "episode_instructions", "derived")}
    for key, value in notes.items():
        console.print(f"  {key}: {json.dumps(value) if isinstance(value, dict | list) else value}", highlight=False, soft_wrap=True)
    if "derived" in info["notes"]:
        derived = info["notes"]["derived"]
        sources = ", ".join(f"{s['path']} ({len(s['episodes'])} episodes)" for s in derived["sources"])
        console.print(f"  derived: {derived['operation']} of {sources}", highlight=False, soft_wrap=True)


@data_app.command("view")
def view_command(
    path: Source,
    episode: Annotated[int, typer.Option(min=0, help="Which episode.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="A .png (frames spread over the episode) or .mp4 (one frame per step); "
                     "default NAME-episodeNNN.mp4 with camera frames, .png without."),
    ] = None,
) -> None:
    """Draw an episode: its camera views above its state and action curves, as a picture or a video."""
    from hpt_kit.data.store import Dataset
    from hpt_kit.data.view import view_episode

    ds = Dataset(path)
    if episode >= ds.num_episodes:
        raise typer.BadParameter(f"{path} has {ds.num_episodes} episodes (0-{ds.num_episodes - 1})", param_hint="--episode")
    suffix = ".mp4" if "image" in ds.fields() else ".png"
    target = out or Path(f"{ds.path.stem}-episode{episode:03d}{suffix}")
    try:
        written = view_episode(ds, episode, target)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--out") from None
    typer.echo(f"wrote {written}")


@data_app.command("select")
def select_command(
    path: Source,
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The new dataset folder.")],
    episodes: Episodes = None,
    fraction: Fraction = None,
    instruction: Instruction = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Write some episodes of a dataset (by list, random fraction or instruction) as a new dataset."""
    from hpt_kit.data.store import Dataset
    from hpt_kit.data.tools import write_subset

    ds = Dataset(path)
    kept = _choose(ds, episodes, fraction, instruction, seed)
    written = _write("select", len(kept), lambda cb: write_subset(ds, kept, out, "select", overwrite, cb))
    _written([written], as_json)


@data_app.command("split")
def split_command(
    path: Source,
    first: Annotated[Path, typer.Argument(metavar="CHOSEN", help="Dataset folder for the chosen episodes.")],
    rest: Annotated[Path, typer.Argument(metavar="REST", help="Dataset folder for the other episodes.")],
    episodes: Episodes = None,
    fraction: Fraction = None,
    instruction: Instruction = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Split a dataset in two: the chosen episodes (by list, random fraction or instruction) and the rest."""
    from hpt_kit.data.store import Dataset
    from hpt_kit.data.tools import write_subset

    ds = Dataset(path)
    kept = _choose(ds, episodes, fraction, instruction, seed)
    others = sorted(set(range(ds.num_episodes)) - set(kept))
    if not others:
        raise typer.BadParameter("every episode was chosen: nothing is left for REST")
    a = _write("split", len(kept), lambda cb: write_subset(ds, kept, first, "split", overwrite, cb))
    b = _write("split (rest)", len(others), lambda cb: write_subset(ds, others, rest, "split", overwrite, cb))
    _written([a, b], as_json)


@data_app.command("merge")
def merge_command(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The merged dataset folder.")],
    paths: Annotated[list[Path], typer.Argument(metavar="DATASET...", help="Two or more datasets of the same spec, or one sharded dataset.")],
    shard_episodes: Annotated[
        int, typer.Option(min=0, metavar="N", help="Write a sharded dataset of N episodes per shard (0: one store).")
    ] = 0,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Merge datasets of one spec into one, episodes in the order given (one sharded dataset: its shards into one store;
    --shard-episodes N: into shards)."""
    from hpt_kit.data.shards import write_sharded
    from hpt_kit.data.store import Dataset
    from hpt_kit.data.tools import merge_datasets

    datasets = [Dataset(p) for p in paths]
    if len(datasets) < 2 and not hasattr(datasets[0], "shards") and not shard_episodes:
        raise typer.BadParameter("give at least two datasets to merge, or one sharded dataset, or --shard-episodes")
    total = sum(ds.num_episodes for ds in datasets)
    if shard_episodes:
        written = _write("merge", total, lambda cb: write_sharded(datasets, out, shard_episodes, overwrite, cb))
    else:
        written = _write("merge", total, lambda cb: merge_datasets(datasets, out, overwrite, cb))
    _written([written], as_json)


class Cameras(StrEnum):
    video = "video"
    images = "images"


@data_app.command("export")
def export_command(
    path: Source,
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The folder to write (must not exist, unless --overwrite).")],
    format: Annotated[str, typer.Option("--format", metavar="FORMAT", help="An exporter (see `hpt-kit list`).")] = "lerobot",
    cameras: Annotated[Cameras, typer.Option(help="Camera frames as video files or as images in the rows.")] = Cameras.video,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Write a dataset in another format (LeRobot v3.0): cameras as video or images, instructions as tasks."""
    from hpt_kit.cli.importing import _import_progress
    from hpt_kit.core.exporter import ExportOptions
    from hpt_kit.core.registry import load_registry
    from hpt_kit.data.exporting import export_dataset, export_summary
    from hpt_kit.data.store import Dataset

    exporter = load_registry(embodiments=False).exporter(format)
    with _import_progress(f"export {format}") as (on_start, on_episode):
        on_start(Dataset(path).num_episodes)
        written = export_dataset(exporter, path, out, ExportOptions(cameras.value), overwrite, on_episode)
    summary = export_summary(written)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"wrote {format} dataset {summary['path']}: {summary['files']} files, {summary['bytes'] / 1e6:.2f} MB")


@data_app.command("push")
def push_command(
    path: Source,
    target: Annotated[str, typer.Argument(metavar="hf://datasets/OWNER/NAME", help="Hugging Face dataset repository (or OWNER/NAME).")],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to upload to.")] = None,
    dry_run: Annotated[
        Path | None, typer.Option("--dry-run", metavar="DIR", help="Write the folder that would be uploaded to DIR; upload nothing.")
    ] = None,
) -> None:
    """Upload a dataset with a generated dataset card to the Hugging Face Hub (the repository is the store)."""
    import tempfile

    from hpt_kit.data.card import dataset_repo_id, prepare_dataset_upload
    from hpt_kit.data.store import Dataset
    from hpt_kit.weights.hub import push

    repo_id = dataset_repo_id(target)
    ds = Dataset(path)
    if dry_run is not None:
        folder = prepare_dataset_upload(ds, repo_id, dry_run)
        typer.echo(f"prepared {folder} (README.md and the store's {sum(1 for _ in folder.rglob('*') if _.is_file()) - 1} files); nothing uploaded")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = prepare_dataset_upload(ds, repo_id, Path(tmp) / "upload")
        url = push(folder, repo_id, private=private, revision=revision, repo_type="dataset")
    typer.echo(f"pushed {ds.path} to hf://datasets/{repo_id}: {url}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
