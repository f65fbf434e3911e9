"""``hpt-kit push`` and ``hpt-kit export``: sharing checkpoints and trunks."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from hpt_kit.cli.choose import Choice


def push_command(
    location: Annotated[str, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help="What to upload.")],
    repo_id: Annotated[str, typer.Argument(metavar="OWNER/REPO", help="Hugging Face model repository.")],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to upload to.")] = None,
    dry_run: Annotated[
        Path | None, typer.Option("--dry-run", metavar="DIR", help="Write the folder that would be uploaded to DIR; upload nothing.")
    ] = None,
    checkpoint: Choice = None,
) -> None:
    """Upload a checkpoint with a generated model card to the Hugging Face Hub."""
    from hpt_kit.weights.checkpoint import resolve_checkpoint
    from hpt_kit.weights.hub import prepare_upload, push
    from hpt_kit.weights.locations import parse_hf

    parse_hf(f"hf://{repo_id}")  # validates OWNER/REPO
    ckpt = resolve_checkpoint(location, checkpoint)
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
    out: Annotated[Path, typer.Argument(help="New folder for config.yaml + trunk.pth (with --onnx: folder for EMBODIMENT.onnx files).")],
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Export each embodiment's whole prediction (observations -> actions) as OUT/EMBODIMENT.onnx for ONNX Runtime.")
    ] = False,
    embodiment: Annotated[
        list[str] | None, typer.Option(help="With --onnx: the embodiment(s) to export (repeatable; default all of the checkpoint's).")
    ] = None,
    checkpoint: Choice = None,
) -> None:
    """Export a checkpoint's trunk in the published HPT format (config.yaml + trunk.pth), or with
    --onnx its embodiments' policies as ONNX graphs that run without Python torch."""
    if checkpoint is not None:  # the chosen folder from here on
        from hpt_kit.weights.checkpoint import resolve_checkpoint

        location = str(resolve_checkpoint(location, checkpoint).path)
    if onnx:
        _export_onnx(location, out, embodiment or [])
        return
    if embodiment:
        raise typer.BadParameter("--embodiment chooses what --onnx exports; the trunk export has none", param_hint="--embodiment")
    from hpt_kit.weights.checkpoint import resolve_checkpoint
    from hpt_kit.weights.published import write_published
    from hpt_kit.weights.trunks import resolve_trunk

    source = resolve_trunk(location, adapters_ok=True)
    tensors, digest, merged = source.tensors, source.digest, ""
    horizons = {"observation_horizon": 1, "action_horizon": 1}
    if source.format == "hpt-kit-checkpoint":  # the horizons of the (first) embodiment it was trained with
        ckpt = resolve_checkpoint(source.path)
        spec = next(iter(ckpt.specs.values()))
        horizons = {"observation_horizon": spec.observation_horizon, "action_horizon": spec.action_horizon}
        if ckpt.description.get("lora"):  # trained with LoRA: the trunk with its adapters merged in
            from hpt_kit.core.registry import load_registry
            from hpt_kit.models.hpt import HPT
            from hpt_kit.weights.tensors import tensor_digest

            tensors = HPT.from_checkpoint(ckpt, load_registry(embodiments=False)).trunk.state_dict()
            digest, merged = tensor_digest(tensors), " with its LoRA adapters merged"
    write_published(out, source.config, tensors, **horizons, extra={"source": str(source.path), "sha256": digest})
    typer.echo(f"exported the {source.config.preset} trunk of {source.path}{merged} to {out} (sha256 {digest})")


def _export_onnx(location: str, out: Path, names: list[str]) -> None:
    """OUT/<embodiment>.onnx for each chosen embodiment; an existing file is never replaced, and all
    are checked before any is written."""
    from hpt_kit.core.registry import UnknownNameError, load_registry
    from hpt_kit.models.hpt import HPT
    from hpt_kit.policy.onnx import export_onnx
    from hpt_kit.weights.checkpoint import resolve_checkpoint
    from hpt_kit.weights.tensors import tensor_digest

    ckpt = resolve_checkpoint(location)
    model = HPT.from_checkpoint(ckpt, load_registry(embodiments=False))
    unknown = [n for n in names if n not in model.specs]
    if unknown:
        raise UnknownNameError(f"the checkpoint has no embodiment {unknown[0]!r}; it has: {', '.join(model.specs)}")
    targets = {n: out / f"{n}.onnx" for n in names or model.specs}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing:
        raise FileExistsError(f"{', '.join(existing)} already exists")
    source = {"source": str(ckpt.path), "sha256": tensor_digest(model.state_dict())}
    for name, path in targets.items():
        export_onnx(model, name, path, metadata=source)
        typer.echo(f"exported the {name} policy of {ckpt.path} to {path}")


def register(app: typer.Typer) -> None:
    app.command("push")(push_command)
    app.command("export")(export_command)
