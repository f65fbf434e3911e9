"""Tensors in and out of files: strict loading into a module, a content digest, and ``torch.load``
that never runs code. Every other weights module (checkpoints, published trunks, encoder weights)
reads through these."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hpt_kit.weights.errors import CheckpointError


def load_strict(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every tensor or fail listing missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shaped = sorted(k for k in set(own) & set(tensors) if tuple(own[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or shaped:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shaped:
            parts.append(
                "mis-shaped keys "
                + ", ".join(f"{k} {tuple(tensors[k].shape)} != {tuple(own[k].shape)}" for k in shaped)
            )
        raise CheckpointError(f"{source}: " + "; ".join(parts))
    module.load_state_dict(dict(tensors), strict=True)


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over tensors: names, dtypes, shapes and bytes, in name order. Identifies a trunk or an
    image encoder by content, whatever file or format it came from."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file; a truncated or damaged file is a :class:`CheckpointError`
    naming it (safetensors' own message names no file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def check_safetensors(path: str | Path) -> None:
    """Read the header of a ``.safetensors`` file and check that its data fits in the file, without
    loading any tensor: catches truncated, zeroed and foreign files early, naming them."""
    import json
    import struct

    try:
        with open(path, "rb") as fh:
            size = Path(path).stat().st_size
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n == 0 or 8 + n > size:
                raise ValueError(f"header length {n} does not fit in the file's {size} bytes")
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if ends and 8 + n + max(ends) > size:
        raise CheckpointError(f"{path}: truncated ({size} bytes, its header needs {8 + n + max(ends)})")


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` that only ever reconstructs tensors and plain containers.

    Anything else in the pickle (a class, a function call) is refused before it runs.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors and plain "
            f"containers, which could run code when unpickled ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable torch file ({exc})") from None
