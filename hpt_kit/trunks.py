"""Where a pre-trained trunk comes from: a kit checkpoint or run directory, a folder in the published
HPT format, or either of them on the Hugging Face Hub (``hf://OWNER/REPO[@REVISION]``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from hpt_kit.hub import resolve_location
from hpt_kit.models.trunk import Trunk, TrunkConfig
from hpt_kit.published import FORMAT as PUBLISHED_FORMAT
from hpt_kit.published import is_published, read_published
from hpt_kit.train.checkpoint import FORMAT as CHECKPOINT_FORMAT
from hpt_kit.train.checkpoint import load_strict, resolve_checkpoint


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
        return trunk_digest(self.tensors)


def resolve_trunk(location: str | Path) -> TrunkSource:
    path = resolve_location(str(location))
    if is_published(path):
        pub = read_published(path)
        return TrunkSource(str(location), pub.path, PUBLISHED_FORMAT, pub.config, pub.tensors)
    ckpt = resolve_checkpoint(path)
    tensors = {k[len("trunk.") :]: v for k, v in ckpt.tensors().items() if k.startswith("trunk.")}
    return TrunkSource(str(location), ckpt.path, CHECKPOINT_FORMAT, ckpt.trunk_config, tensors, ckpt.step)


def load_trunk(location: str | Path) -> Trunk:
    """The trunk at ``location``, every tensor loaded strictly, in eval mode.

    Called on tokens (B, L, D) it returns (B, L, D); it adds no positional table (see
    :func:`hpt_kit.positional_table`).
    """
    source = resolve_trunk(location)
    trunk = Trunk(source.config)
    load_strict(trunk, source.tensors, f"{source.path} (trunk)")
    return trunk.eval()


def trunk_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the trunk's tensors (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()
