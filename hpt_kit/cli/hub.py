"""``hpt-kit push`` and ``hpt-kit export``: sharing checkpoints and trunks."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer


def push_command(
    location: Annotated[str, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help="What to upload.")],
    repo_id: Annotated[str, typer.Argument(metavar="OWNER/REPO", help="Hugging Face model repository.")],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to upload to.")] = None,
    dry_run: Annotated[
        Path | None, typer.Option("--dry-run", metavar="DIR", help="Write the folder that would be uploaded to DIR; upload nothing.")
    ] = None,
) -> None:
    """Upload a checkpoint with a generated model card to the Hugging Face Hub."""
    from hpt_kit.weights.checkpoint import resolve_checkpoint
    from hpt_kit.weights.hub import prepare_upload, push
    from hpt_kit.weights.locations import parse_hf

    parse_hf(f"hf://{repo_id}")  # validates OWNER/REPO
    ckpt = resolve_checkpoint(location)
    if dry_run is not None:
        folder = prepare_upload(ckpt.path, ckpt.description, repo_id, dry_run)
        typer.echo(f"prepared {folder} ({', '.join(sorted(p.name for p in folder.iterdir()))}); nothing uploaded")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = prepare_upload(ckpt.path, ckpt.description, repo_id, Path(tmp) / "upload")
        url = push(folder, repo_id, private=private, revision=revision)
    typer.echo(f"pushed {ckpt.path} to hf://{repo_id}: {url}")


def export_command(
    location: Annotated[str, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help="Kit checkpoint to export.")],
    out: Annotated[Path, typer.Argument(help="New folder for config.yaml + trunk.pth.")],
) -> None:
    """Export a checkpoint's trunk in the published HPT format (config.yaml + trunk.pth)."""
    from hpt_kit.weights.checkpoint import resolve_checkpoint
    from hpt_kit.weights.published import write_published
    from hpt_kit.weights.trunks import resolve_trunk

    source = resolve_trunk(location)
    horizons = {"observation_horizon": 1, "action_horizon": 1}
    if source.format == "hpt-kit-checkpoint":  # the horizons of the (first) embodiment it was trained with
        spec = next(iter(resolve_checkpoint(source.path).specs.values()))
        horizons = {"observation_horizon": spec.observation_horizon, "action_horizon": spec.action_horizon}
    write_published(out, source.config, source.tensors, **horizons, extra={"source": str(source.path), "sha256": source.digest})
    typer.echo(f"exported the {source.config.preset} trunk of {source.path} to {out} (sha256 {source.digest})")


def register(app: typer.Typer) -> None:
    app.command("push")(push_command)
    app.command("export")(export_command)
