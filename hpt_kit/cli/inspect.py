"""``hpt-kit info``: what a checkpoint holds."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

import typer

from hpt_kit.cli.choose import Choice


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_loads(ckpt, tensors):
    """The weights fit the network the description builds, exactly as eval and transfer load them:
    a missing, unexpected or mis-shaped tensor is an error naming the file and the keys."""
    from hpt_kit.core.registry import load_registry
    from hpt_kit.models.hpt import HPT
    from hpt_kit.weights.tensors import load_strict

    model = HPT(ckpt.trunk_config, ckpt.specs, ckpt.stats, load_registry(embodiments=False, importers=False), pretrained=False)
    load_strict(model, tensors, str(ckpt.weights_path))
    return model


def info_command(
    location: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="Checkpoint, run directory or hf://.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    checkpoint: Choice = None,
) -> None:
    """Show format, trunk preset, parameter counts per part, embodiments, statistics and the weights' sha256."""
    from hpt_kit.weights.checkpoint import WEIGHTS, resolve_checkpoint
    from hpt_kit.weights.locations import resolve_location
    from hpt_kit.weights.published import is_published
    from hpt_kit.weights.tensors import tensor_digest

    path = resolve_location(location)
    if is_published(path) and checkpoint is None:
        _published_info(path, as_json)
        return
    ckpt = resolve_checkpoint(path, checkpoint)
    tensors = ckpt.tensors()
    model = _check_loads(ckpt, tensors)
    parts: dict[str, int] = {}
    for key, t in model.named_parameters():  # parameters as training counts them (no normaliser statistics)
        top = key.split(".")[0]
        part = top if top == "trunk" else f"{top}.{key.split('.')[1]}"
        parts[part] = parts.get(part, 0) + t.numel()
    d = ckpt.description
    out = {
        "path": str(ckpt.path),
        "format": d["format"],
        "format_version": d["format_version"],
        "kit_version": d.get("kit_version"),
        "step": ckpt.step,
        "mode": d.get("mode"),
        "frozen_trunk": d.get("frozen_trunk"),
        "trunk": d["trunk"],
        "parameters": {"total": sum(parts.values()), **dict(sorted(parts.items()))},
        "embodiments": d["embodiments"],
        "metrics": d.get("metrics", {}),
        "sha256": _sha256(ckpt.path / WEIGHTS),
        "trunk_sha256": tensor_digest({k[6:]: v for k, v in tensors.items() if k.startswith("trunk.")}),
    }
    for key in ("trunk_source", "trunk_source_format", "trunk_source_sha256"):
        if key in d:
            out[key] = d[key]
    if as_json:
        typer.echo(json.dumps(out))
        return
    from rich.table import Table
    from rich.text import Text

    from hpt_kit.cli.output import stdout_console

    console = stdout_console()
    console.print(Text.assemble((str(ckpt.path), "bold"), f"  {d['format']} v{d['format_version']}  step {ckpt.step}  mode {d.get('mode')}"))
    t = d["trunk"]
    console.print(f"trunk: preset {t['preset']}, width {t['embed_dim']}, {t['num_blocks']} blocks, {t['num_heads']} heads")
    table = Table(title="parameters")
    table.add_column("part")
    table.add_column("count", justify="right")
    for part, n in out["parameters"].items():
        table.add_row(part, f"{n:,}")
    console.print(table)
    for name, e in d["embodiments"].items():
        spec, stats = e["spec"], e["stats"]
        console.print(
            Text.assemble((name, "bold"), f": state {spec['observation']['state_dim']}, action {spec['action']['dim']}, "
            f"horizons {spec['observation_horizon']}/{spec['head']['action_horizon']}, head {spec['head']['kind']}"),
            highlight=False,
        )
        console.print(f"  action min {_fmt(stats['action']['min'])} max {_fmt(stats['action']['max'])}", highlight=False)
        console.print(f"  state mean {_fmt(stats['state']['mean'])} std {_fmt(stats['state']['std'])}", highlight=False)
        obs = spec["observation"]
        for what, names in (("state", obs.get("state_names")), ("action", spec["action"].get("names")),
                            ("cameras", (obs.get("image") or {}).get("views"))):
            if names:  # the source's names, where the data kept them
                console.print(f"  {what}: {', '.join(names)}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"sha256 {out['sha256']} (model.safetensors), trunk tensors {out['trunk_sha256']}")
    if "trunk_source" in out:
        console.print(f"trunk loaded from {out['trunk_source']} ({out['trunk_source_format']}, trunk sha256 {out['trunk_source_sha256']})")


def _published_info(path, as_json: bool) -> None:
    from hpt_kit.weights.published import FORMAT, WEIGHTS, read_published
    from hpt_kit.weights.tensors import tensor_digest

    pub = read_published(path)
    out = {
        "path": str(pub.path),
        "format": FORMAT,
        "trunk": pub.config.to_dict(),
        "network": pub.network,
        "parameters": {"total": sum(t.numel() for t in pub.tensors.values()), "trunk": sum(t.numel() for t in pub.tensors.values())},
        "embodiments": {},
        "sha256": _sha256(pub.path / WEIGHTS),
        "trunk_sha256": tensor_digest(pub.tensors),
    }
    if as_json:
        typer.echo(json.dumps(out))
        return
    from rich.text import Text

    from hpt_kit.cli.output import stdout_console

    console = stdout_console()
    t = out["trunk"]
    console.print(Text.assemble((str(pub.path), "bold"), f"  {FORMAT} (config.yaml + trunk.pth)"))
    console.print(
        f"trunk: preset {t['preset']}, width {t['embed_dim']}, {t['num_blocks']} blocks, {t['num_heads']} heads, "
        f"{out['parameters']['trunk']:,} parameters"
    )
    console.print("network: " + ", ".join(f"{k}={v}" for k, v in pub.network.items()), highlight=False)
    console.print(f"sha256 {out['sha256']} (trunk.pth), trunk tensors {out['trunk_sha256']}")


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)
