"""Where a pre-trained trunk comes from: a kit checkpoint or run directory, a folder in the published
HPT format, or either of them on the Hugging Face Hub (``hf://OWNER/REPO[@REVISION]``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.weights.checkpoint import FORMAT as CHECKPOINT_FORMAT
from hpt_kit.weights.checkpoint import resolve_checkpoint
from hpt_kit.weights.locations import resolve_location
from hpt_kit.weights.published import FORMAT as PUBLISHED_FORMAT
from hpt_kit.weights.published import is_published, read_published
from hpt_kit.weights.tensors import CheckpointError, tensor_digest


@dataclass(frozen=True)
class TrunkSource:
    location: str
    path: Path
    format: str
    config: TrunkConfig
    tensors: dict[str, torch.Tensor]  # Trunk state dict (no "trunk." prefix)
    step: int | None = None

    @property
    def digest(self) -> str:
        return tensor_digest(self.tensors)


def resolve_trunk(location: str | Path, adapters_ok: bool = False, option: str = "--checkpoint") -> TrunkSource:
    """The trunk at ``location``. A checkpoint trained with LoRA adapters holds its base trunk, not the
    trunk it ran with, so it is refused unless ``adapters_ok`` (export, which merges them). A run
    directory whose latest checkpoint is damaged is refused; ``option`` is how the command chooses
    another (named in the message)."""
    path = resolve_location(str(location))
    if is_published(path):
        pub = read_published(path)
        return TrunkSource(str(location), pub.path, PUBLISHED_FORMAT, pub.config, pub.tensors)
    ckpt = resolve_checkpoint(path, option=option)
    if ckpt.description.get("lora") and not adapters_ok:
        raise CheckpointError(
            f"{ckpt.path}: trained with LoRA adapters, which its trunk tensors leave out; "
            f"`hpt-kit export {location} DIR` writes the trunk with them merged, then use DIR"
        )
    tensors = {k[len("trunk.") :]: v for k, v in ckpt.tensors().items() if k.startswith("trunk.")}
    return TrunkSource(str(location), ckpt.path, CHECKPOINT_FORMAT, ckpt.trunk_config, tensors, ckpt.step)


def check_trunk(location: str, choice: str | None = None, option: str = "--trunk-checkpoint") -> str:
    """Before a transfer starts: the trunk location to train from. A run directory's latest checkpoint
    must be complete (else the error names the file and how to choose another); with ``choice``, the
    chosen checkpoint's folder is returned. Reads descriptions and headers only, no tensors."""
    path = resolve_location(str(location))
    if is_published(path):
        if choice is not None:
            raise CheckpointError(f"{path}: a published trunk, not a run directory; {option} chooses among a run's checkpoints")
        return str(location)
    ckpt = resolve_checkpoint(path, choice, option)
    return str(ckpt.path) if choice is not None else str(location)
