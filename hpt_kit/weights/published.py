"""The published HPT trunk format: a folder with ``config.yaml`` and ``trunk.pth``.

``config.yaml`` is a dump of the training config whose ``network`` section sizes the trunk
(``embed_dim``, ``num_blocks``, ``num_heads``, ...). ``trunk.pth`` is a ``torch.save``d state dict whose
keys are ``trunk.blocks.{i}.attn.in_proj_weight`` and so on, exactly the names of
:class:`hpt_kit.models.trunk.Trunk` under the prefix ``trunk.``. Reading never executes code: the
YAML is read with ``safe_load`` and the tensors with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hpt_kit.core.presets import PRESETS, TrunkConfig
from hpt_kit.weights.tensors import CheckpointError, safe_torch_load

CONFIG = "config.yaml"
WEIGHTS = "trunk.pth"
PREFIX = "trunk."
FORMAT = "hpt-published-trunk"


class PublishedFormatError(CheckpointError):
    """A published trunk folder that cannot be read; the message names the file and the key."""


def preset_name(embed_dim: int, num_blocks: int, num_heads: int) -> str:
    for name, cfg in PRESETS.items():
        if (cfg.embed_dim, cfg.num_blocks, cfg.num_heads) == (embed_dim, num_blocks, num_heads):
            return name
    return "custom"


@dataclass(frozen=True)
class PublishedTrunk:
    path: Path
    config: TrunkConfig
    network: dict[str, Any]  # the config.yaml network section, as published
    tensors: dict[str, torch.Tensor]  # without the "trunk." prefix


def is_published(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()


def read_network(folder: Path) -> dict[str, Any]:
    import yaml

    path = folder / CONFIG
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:  # its own message spans several lines: keep the problem and the place
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PublishedFormatError(f"{path}: not valid YAML ({where}{problem})") from None
    if not isinstance(config, dict) or not isinstance(config.get("network"), dict):
        raise PublishedFormatError(f"{path}: key 'network' is missing")
    network = config["network"]
    for key in ("embed_dim", "num_blocks", "num_heads"):
        if not isinstance(network.get(key), int):
            raise PublishedFormatError(f"{path}: key 'network.{key}' is missing or not an integer")
    if network.get("no_trunk"):
        raise PublishedFormatError(f"{path}: 'network.no_trunk' is true: this checkpoint has no trunk")
    pooling = network.get("token_postprocessing", "mean")
    if pooling != "mean":
        raise PublishedFormatError(f"{path}: 'network.token_postprocessing' is {pooling!r}; only 'mean' is supported")
    return network


def read_published(folder: str | Path) -> PublishedTrunk:
    folder = Path(folder)
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise PublishedFormatError(f"{folder}: {name} is missing")
    network = read_network(folder)
    e, b, h = network["embed_dim"], network["num_blocks"], network["num_heads"]
    config = TrunkConfig(e, b, h, preset_name(e, b, h))
    try:
        state = safe_torch_load(folder / WEIGHTS)
    except CheckpointError as exc:
        raise PublishedFormatError(str(exc)) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PublishedFormatError(f"{folder / WEIGHTS}: expected a state dict of tensors")
    outside = sorted(k for k in state if not k.startswith(PREFIX))
    if outside:
        raise PublishedFormatError(f"{folder / WEIGHTS}: unexpected keys outside '{PREFIX}': {outside}")
    tensors = {k[len(PREFIX) :]: v for k, v in state.items()}
    return PublishedTrunk(folder.resolve(), config, dict(network), tensors)


def write_published(
    folder: str | Path,
    config: TrunkConfig,
    trunk_tensors: Mapping[str, torch.Tensor],
    observation_horizon: int = 1,
    action_horizon: int = 1,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a trunk in the published format, atomically (temporary sibling, then rename)."""
    import yaml

    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists")
    folder.parent.mkdir(parents=True, exist_ok=True)
    network = {
        "embed_dim": config.embed_dim,
        "num_blocks": config.num_blocks,
        "num_heads": config.num_heads,
        "drop_path": 0.0,
        "token_postprocessing": "mean",
        "observation_horizon": observation_horizon,
        "action_horizon": action_horizon,
        "use_modality_embedding": False,
        "weight_init_style": "pytorch",
        "no_trunk": False,
    }
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        doc = {"network": network, **({"hpt_kit": dict(extra)} if extra else {})}
        (tmp / CONFIG).write_text(yaml.safe_dump(doc, sort_keys=False))
        state = {PREFIX + k: v.detach().cpu().contiguous() for k, v in trunk_tensors.items()}
        torch.save(state, tmp / WEIGHTS)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
