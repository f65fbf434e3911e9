"""``hpt-kit convert``: run an embodiment's converter into a dataset store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def convert_command(
    name: Annotated[str, typer.Argument(help="Embodiment name (see `hpt-kit list`).")],
    episodes: Annotated[int, typer.Option(min=1, help="Episodes to convert.")] = 50,
    out: Annotated[Path | None, typer.Option(help="Dataset folder (default: $HPT_KIT_DATA/NAME.zarr).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the converter.")] = 0,
    render: Annotated[bool, typer.Option(help="Ask the converter to render camera images.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset (only once the new one is complete).")] = False,
    image_encoder: Annotated[
        str | None,
        typer.Option(
            metavar="ARCH",
            help="Also encode every camera frame once with this frozen torchvision ResNet (resnet18, resnet34, "
            "resnet50, resnet101, resnet152) and store the features; image stems then read them.",
        ),
    ] = None,
    image_encoder_weights: Annotated[
        str,
        typer.Option(
            metavar="WEIGHTS",
            help="The encoder's weights: imagenet (downloaded by torchvision), none "
            "(seeded random initialisation) or a .pth/.safetensors state dict file.",
        ),
    ] = "imagenet",
    image_encoder_resize: Annotated[
        int,
        typer.Option(min=0, metavar="N", help="Resize frames to N x N before the encoder (0 = as rendered)."),
    ] = 0,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Convert in N processes (or, with --address, at most N Ray tasks at a time) into a sharded dataset."),
    ] = 1,
    address: Annotated[
        str | None,
        typer.Option(metavar="HOST:PORT", help="Run the work units on this running Ray cluster (default: $RAY_ADDRESS)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Keep the finished units of an interrupted --workers/--address conversion and do the rest.")
    ] = False,
    unit_episodes: Annotated[
        int, typer.Option(min=0, metavar="N", help="Episodes per work unit and shard (0: about four units per worker).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Convert an embodiment's raw data (e.g. a scripted expert) into a validated zarr dataset."""
    from hpt_kit.core.registry import load_registry
    from hpt_kit.core.spec import check_arch
    from hpt_kit.data.convert import check_dataset, default_dataset_path
    from hpt_kit.data.store import Dataset
    from hpt_kit.engine import ray_address

    if image_encoder:
        try:
            check_arch(image_encoder)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--image-encoder") from None
    if workers > 1:  # the pool's fork server loads the plugins while this process loads them
        from hpt_kit.data.fanout import start_workers

        start_workers(workers, address)
    registry = load_registry()
    embodiment = registry.embodiment(name)
    target = out or default_dataset_path(name)
    if target.exists() and not overwrite:  # a plugin changed since: say which fields, before any progress bar
        check_dataset(embodiment, Dataset(target))
    if workers > 1 or ray_address(address) or resume:  # work units, one shard each (hpt_kit/data/fanout.py)
        from hpt_kit.cli.fanout import fanout_progress
        from hpt_kit.data.fanout import convert_sharded

        with fanout_progress(f"convert {name}") as on_progress:
            path = convert_sharded(
                name, target, episodes, seed, render, overwrite, image_encoder, image_encoder_weights,
                image_encoder_resize, workers, address, resume, unit_episodes, on_progress,
            )
    else:
        path = _convert_here(embodiment, out, episodes, seed, render, overwrite, image_encoder,
                             image_encoder_weights, image_encoder_resize, registry, name)
    _summary(name, path, as_json)


def _convert_here(embodiment, out, episodes, seed, render, overwrite, image_encoder, image_encoder_weights,
                  image_encoder_resize, registry, name):
    from hpt_kit.cli.output import conversion_progress
    from hpt_kit.data.convert import convert

    with conversion_progress() as on_convert:
        return convert(
            embodiment,
            out,
            episodes=episodes,
            seed=seed,
            render=render,
            overwrite=overwrite,
            on_episode=on_convert(name, episodes),
            image_encoder=image_encoder,
            image_encoder_weights=image_encoder_weights,
            image_encoder_resize=image_encoder_resize,
            registry=registry,
        )


def _summary(name: str, path: Path, as_json: bool) -> None:
    from dataclasses import asdict

    from hpt_kit.data.store import Dataset

    ds = Dataset(path)
    feats = ds.spec.observation.image_features
    encoder = asdict(feats.encoder) if feats is not None and feats.encoder is not None else None
    summary = {
        "embodiment": name,
        "path": str(path),
        "episodes": ds.num_episodes,
        "steps": ds.num_steps,
        "notes": ds.notes,
        "image_encoder": encoder,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"wrote {ds.num_episodes} episodes ({ds.num_steps} steps) of {name} to {path}")
        if encoder is not None:
            typer.echo(
                f"  image_features: {feats.tokens} tokens x {feats.channels} per view from {encoder['arch']} "
                f"(weights {encoder['weights']}, sha256 {encoder['sha256'][:12]}...)"
            )
        for k, v in ds.notes.items():
            typer.echo(f"  {k}: {v}")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)
