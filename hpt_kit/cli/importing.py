"""``hpt-kit import``: a dataset in another format (LeRobot, robomimic, RLDS, ...) into a kit dataset,
through the importer plugin for that format."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer


class ImageFit(StrEnum):
    pad = "pad"
    crop = "crop"
    stretch = "stretch"

def import_command(
    format: Annotated[str, typer.Argument(metavar="FORMAT", help="The source's format: an importer (see `hpt-kit list`).")],
    source: Annotated[str, typer.Argument(help="A local folder or file, or hf://datasets/OWNER/NAME[@REVISION].")],
    name: Annotated[str | None, typer.Option(help="The imported embodiment's name (default: from the source's name).")] = None,
    state: Annotated[list[str] | None, typer.Option("--state", metavar="KEY", help="A state key; repeat to concatenate several, in order.")] = None,
    no_state: Annotated[
        bool,
        typer.Option("--no-state", help="Import no state: a state-free spec (state_dim 0) whose stems read the views and instructions. "
                     "Also what a source without any state key gets."),
    ] = False,
    action: Annotated[str | None, typer.Option(metavar="KEY", help="The action key.")] = None,
    view: Annotated[list[str] | None, typer.Option("--view", metavar="KEY", help="A camera view key; repeatable.")] = None,
    no_images: Annotated[bool, typer.Option("--no-images", help="Import no camera views.")] = False,
    image_size: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Scale frames to N x N. 0: as stored, or where the views differ in size, the smallest view's size.",
        ),
    ] = 0,
    image_fit: Annotated[
        ImageFit,
        typer.Option(
            help="How a frame of another shape fits the stored size: pad (aspect kept, black bars), crop (aspect kept, "
            "centre cut) or stretch. A robot repeats it with hpt_kit.images.fit_frames.",
        ),
    ] = ImageFit.pad,
    episodes: Annotated[int, typer.Option(min=0, help="Import the first N episodes (0: all).")] = 0,
    option: Annotated[list[str] | None, typer.Option("--option", metavar="KEY=VALUE", help="An importer option, e.g. filter_key=train.")] = None,
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable or invalid episodes (noted in the dataset) instead of stopping.")] = False,
    text_encoder: Annotated[str, typer.Option(help="Text encoder for task instructions; none drops them.")] = "hash-ngram",
    image_encoder: Annotated[str | None, typer.Option(metavar="ARCH", help="Also store frozen ResNet features (as convert).")] = None,
    image_encoder_weights: Annotated[str, typer.Option(metavar="WEIGHTS", help="imagenet, none or a weights file.")] = "imagenet",
    out: Annotated[Path | None, typer.Option(help="Dataset folder (default: $HPT_KIT_DATA/NAME.zarr).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset (only once the new one is complete).")] = False,
    describe: Annotated[bool, typer.Option(help="Only show what the source holds and the keys to choose from.")] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="Import in N processes (with --address: at most N Ray tasks at a time) into a sharded dataset.")
    ] = 1,
    address: Annotated[
        str | None, typer.Option(metavar="HOST:PORT", help="Run the work units on this running Ray cluster (default: $RAY_ADDRESS).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Keep the finished units of an interrupted --workers/--address import and do the rest.")] = False,
    unit_episodes: Annotated[int, typer.Option(min=0, metavar="N", help="Episodes per work unit and shard (0: about four units per worker).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Import a robot dataset in another format as a data-only embodiment, usable in recipes."""
    from hpt_kit.core.registry import load_registry
    from hpt_kit.data.importing import ImportOptions, import_dataset, resolve_source

    if workers > 1 and not describe:  # the pool's fork server loads the plugins while this process loads them
        from hpt_kit.data.fanout import start_workers

        start_workers(workers, address)
    registry = load_registry(embodiments=False)
    importer = registry.importer(format)
    if describe:
        info = importer.describe(resolve_source(source))
        _print_description(info, source, as_json)
        return
    if state and no_state:
        raise typer.BadParameter("--state and --no-state contradict each other; give one", param_hint="--no-state")
    opts = ImportOptions(
        name=name,
        state=() if no_state else (tuple(state) if state else None),
        action=action,
        views=() if no_images else (tuple(view) if view else None),
        episodes=episodes,
        image_size=image_size,
        image_fit=image_fit.value,
        options=_options(option or []),
        skip_bad=skip_bad,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        image_encoder_weights=image_encoder_weights,
    )
    from hpt_kit.engine import ray_address

    if workers > 1 or ray_address(address) or resume:  # ranges of episodes as work units, one shard each
        from hpt_kit.cli.fanout import fanout_progress
        from hpt_kit.data.fanout import import_sharded

        with fanout_progress(f"import {format}") as on_progress:
            path = import_sharded(format, source, out, opts, overwrite, workers, address, resume, unit_episodes, on_progress, registry)
    else:
        with _import_progress(f"import {format}") as (on_start, on_episode):
            path = import_dataset(importer, source, out, opts, registry, overwrite, on_episode, on_start)
    _print_result(path, as_json)


def _options(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--option")
        out[key] = value
    return out


class _import_progress:
    """A rich bar over the source's episodes with steps/s and the ETA; yields ``(on_start,
    on_episode)`` (the total is known once the importer has described the source)."""

    def __init__(self, label: str):
        from hpt_kit.cli.output import make_progress

        self._progress = make_progress()
        self._label = label

    def __enter__(self):
        self._progress.__enter__()
        task = self._progress.add_task(self._label, total=None, info="")
        start, steps = time.perf_counter(), [0]

        def on_episode(i: int, n: int) -> None:
            steps[0] += n
            rate = steps[0] / max(time.perf_counter() - start, 1e-9)
            self._progress.update(task, completed=i + 1, info=f"{steps[0]} steps, {rate:.0f} steps/s")

        def on_start(total: int) -> None:
            self._progress.update(task, total=total)

        return on_start, on_episode

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)


def _print_description(info: Any, source: str, as_json: bool) -> None:
    from rich.table import Table

    from hpt_kit.cli.output import stdout_console

    roles = {k: "state" for k in info.default_state} | {info.default_action: "action"} | {k: "view" for k in info.default_views}
    if as_json:
        doc = asdict(info) | {"location": source, "defaults": roles}
        typer.echo(json.dumps(doc, default=str))
        return
    console = stdout_console()
    console.print(
        f"{info.format} dataset {source}: {info.episodes} episodes, {info.steps or '?'} steps, "
        f"{info.fps or '?'} Hz, robot {info.robot or '?'}, {len(info.tasks)} task(s)",
        highlight=False,
        markup=False,
    )
    table = Table("key", "kind", "shape", "dtype", "fps", "default use")
    for f in info.features:
        table.add_row(f.key, f.kind, str(tuple(f.shape)), f.dtype, f"{f.fps:g}" if f.fps else "", roles.get(f.key, ""))
    console.print(table)
    for task in info.tasks[:10]:
        console.print(f"  task: {task}", highlight=False, markup=False)
    console.print("choose with --state KEY (repeatable) or --no-state, --action KEY, --view KEY (repeatable) or --no-images", markup=False)


def _print_result(path: Path, as_json: bool) -> None:
    from hpt_kit.cli.output import count
    from hpt_kit.data.store import Dataset

    ds = Dataset(path)
    spec = ds.spec
    summary = {
        "embodiment": ds.name,
        "path": str(path),
        "episodes": ds.num_episodes,
        "steps": ds.num_steps,
        "state_dim": spec.observation.state_dim,
        "action_dim": spec.action.dim,
        "views": list(spec.observation.image.views) if spec.observation.image else [],
        "control_hz": spec.action.control_hz,
        "notes": ds.notes,
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"wrote {count(ds.num_episodes, 'episode')} ({ds.num_steps} steps) of imported embodiment {ds.name} to {path}")
    typer.echo(f"  state {summary['state_dim'] or 'none (image and language stems only)'}, action {summary['action_dim']}, views {summary['views']}, {summary['control_hz']:g} Hz")
    frames = ds.notes.get("import", {}).get("frames")
    if frames:
        stored = f"{frames['height']}x{frames['width']}"
        each = ", ".join(f"{v} {h}x{w}" for v, (h, w) in frames["source"].items())
        how = {"pad": "aspect kept, padded with black", "crop": "aspect kept, centre cropped", "stretch": "stretched"}[frames["fit"]]
        typer.echo(f"  frames stored at {stored} (from {each}; {how}, as hpt_kit.images.fit_frames(frames, "
                   f"{frames['height']}, {frames['width']}, {frames['fit']!r}) does on a robot)")
    skipped = ds.notes.get("skipped_episodes") or []
    for s in skipped:
        typer.echo(f"  skipped episode {s['episode']}: {s['reason']}")


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
