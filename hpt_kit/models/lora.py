"""Low-rank adapters (LoRA) on the trunk, through peft (the extra ``hpt-kit[lora]``).

``add_lora`` wraps every linear map of every trunk block: the attention's fused input projection
``in_proj_weight`` (a raw ``nn.Parameter``, so through peft's ``target_parameters``), its output
projection and both feed-forward layers (``target_modules``). The trunk's own tensors stay frozen and
untouched; only the adapters train. peft renames what it wraps (``…fc1.base_layer.weight``), so a
checkpoint stores the trunk under its usual names (:func:`split_lora`) and the adapters in a file of
their own, ``lora.safetensors``, under peft's names. Loading for inference merges the adapters into
the weights (:func:`merge_lora`): the network is then a plain HPT, which every consumer (Policy, ONNX,
export) takes as it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hpt_kit.weights.tensors import load_strict

LORA_FILE = "lora.safetensors"
TARGET_MODULES = ("out_proj", "fc1", "fc2")  # nn.Linear layers of each block
TARGET_PARAMETERS = ("in_proj_weight",)  # SelfAttention's fused q/k/v projection, a raw parameter
_WRAPPED = ".base_layer"


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float  # adapters are scaled by alpha / rank

    def to_dict(self) -> dict[str, object]:
        return {"rank": self.rank, "alpha": self.alpha, "file": LORA_FILE,
                "target_modules": list(TARGET_MODULES), "target_parameters": list(TARGET_PARAMETERS)}

    @classmethod
    def from_description(cls, description: Mapping[str, object]) -> LoraSettings | None:
        lora = description.get("lora")
        return None if not lora else cls(int(lora["rank"]), float(lora["alpha"]))


def _peft():
    try:
        import peft
    except ImportError:
        raise ImportError("LoRA needs peft: pip install 'hpt-kit[lora]'") from None
    return peft


def add_lora(trunk: nn.Module, settings: LoraSettings) -> None:
    """Wrap the trunk's linear maps with fresh adapters (B = 0: the output is unchanged), in place."""
    peft = _peft()
    # Two passes, the linear layers first: peft 0.22 wraps a targeted parameter's module before its
    # targeted children, which then are out of its reach (``ParamWrapper has no attribute out_proj``).
    # In this order peft 0.21 and 0.22 make the same names and the same initial adapters as one pass in 0.21.
    passes = ({"target_modules": list(TARGET_MODULES)}, {"target_modules": [], "target_parameters": list(TARGET_PARAMETERS)})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")  # the second pass
        for targets in passes:
            peft.inject_adapter_in_model(peft.LoraConfig(r=settings.rank, lora_alpha=settings.alpha, **targets), trunk)


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def adapters(module: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in module.named_parameters() if is_adapter(n)]


def train_adapters_only(trunk: nn.Module) -> None:
    """Freeze the trunk's own tensors, train its adapters."""
    trunk.requires_grad_(False)
    for p in adapters(trunk):
        p.requires_grad_(True)


def split_lora(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A LoRA network's state as (everything else under its usual names, the adapters)."""
    base = {k.replace(_WRAPPED, ""): v for k, v in state.items() if not is_adapter(k)}
    return base, {k: v for k, v in state.items() if is_adapter(k)}


def load_lora(model: nn.Module, base: Mapping[str, torch.Tensor], lora: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a checkpoint's tensors (usual names) and adapters into a network whose trunk has adapters,
    strictly: every tensor of the network comes from one of the two."""
    live = {k.replace(_WRAPPED, ""): k for k in model.state_dict() if not is_adapter(k)}
    renamed = {live.get(k, k): v for k, v in base.items()}
    load_strict(model, {**renamed, **lora}, source)


def load_adapters(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Load saved adapters into a network that has fresh ones; the names must match exactly."""
    from hpt_kit.weights.tensors import CheckpointError

    live = {k for k in model.state_dict() if is_adapter(k)}
    missing, unexpected = sorted(live - set(tensors)), sorted(set(tensors) - live)
    if missing or unexpected:
        raise CheckpointError(f"{source}: adapters do not match the network (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(dict(tensors), strict=False)


def read_adapters(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(folder) / LORA_FILE
    if not path.is_file():
        from hpt_kit.weights.tensors import CheckpointError

        raise CheckpointError(f"{folder}: the checkpoint was trained with LoRA but {LORA_FILE} is missing")
    return load_file(str(path))


@torch.no_grad()
def merge_lora(trunk: nn.Module) -> None:
    """Add every adapter's scaled B @ A into the weight it wraps and remove the wrappers, in place:
    the trunk then has its usual modules and names, and computes what it computed with adapters."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(n, m) for n, m in trunk.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in reversed(wrapped):  # innermost first: attn.base_layer.out_proj before attn
        module.merge()
        parent, _, attr = name.rpartition(".")
        setattr(trunk.get_submodule(parent) if parent else trunk, attr, module.get_base_layer())
