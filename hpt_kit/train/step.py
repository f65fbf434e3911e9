"""One training step and the choices around it, shared by the loop and ``hpt-kit bench`` so that the
bench measures exactly what training runs: the device, autocast and compile mode, the optimiser,
the learning-rate schedule, the mixture draw, the step itself and validation."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hpt_kit.core.recipe import TrainSection
from hpt_kit.data.sampler import SequenceSampler, mask_history

Batch = dict[str, torch.Tensor]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def compile_mode(device: torch.device, distributed: bool = False) -> str | None:
    """``torch.compile`` mode: CUDA graphs on a single GPU, where a small-batch step is otherwise
    bound by kernel launches; inductor's default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" and not distributed else None


@functools.cache
def reuse_freed_memory() -> bool:
    """Make glibc's malloc serve every block from its heap and keep freed memory there, for the rest
    of the process; True where it could (Linux with glibc), False elsewhere.

    By default a block over the mmap threshold (at most 32 MB) is mapped on allocation and unmapped
    on free, so a CPU step whose activations are that large (base trunk, batch 256: 34 MB per MLP
    activation) faults every page of them in again each step: about 400 000 page faults and 0.7-0.9 s
    of kernel time per step measured. Kept in the heap, blocks are reused: about 70 000 faults and
    0.1-0.2 s. Peak memory is the same; the heap is not returned to the system until the process ends.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The forward pass's arithmetic (``train.precision``): "auto" is bfloat16 autocast on a GPU and
    full precision on the CPU, "bf16" bfloat16 autocast on either, "fp32" full precision."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(
    params: list[torch.nn.Parameter], lr: float, weight_decay: float, device: torch.device,
    scaled: Sequence[torch.nn.Parameter] = (), lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """AdamW that decays matrices only: biases, norms, latents and other 1-D tensors are not decayed.
    The ``scaled`` parameters (the trunk's, for ``transfer.trunk_lr_scale``) learn at ``lr * lr_scale``
    in groups of their own; with ``lr_scale`` 1 there are just the two groups."""
    chosen = {id(p) for p in scaled} if lr_scale != 1 else set()
    parts = [([p for p in params if id(p) not in chosen], 1.0)]
    if chosen:
        parts.append(([p for p in params if id(p) in chosen], lr_scale))
    groups = [
        {"params": [p for p in members if (p.ndim >= 2) == decayed], "weight_decay": weight_decay if decayed else 0.0, "lr_scale": scale}
        for members, scale in parts
        for decayed in (True, False)
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def lr_at(step: int, cfg: TrainSection) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def to_torch(batch: Mapping[str, np.ndarray], device: torch.device) -> Batch:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in batch.items()}


def draw(names: list[str], weights: np.ndarray, batch: int, mixed: bool, rng: np.random.Generator) -> dict[str, int]:
    """How many samples each embodiment gets this step: all to one drawn by weight, or (``mixed``) a
    multinomial split of the batch. ``rng`` is the same on every rank, so every rank agrees."""
    if mixed:
        return {n: int(c) for n, c in zip(names, rng.multinomial(batch, weights)) if c}
    return {names[int(rng.choice(len(names), p=weights))]: batch}


def sample(
    drawn: Mapping[str, int], samplers: Mapping[str, Any], history_mask: float, rng: np.random.Generator, device: torch.device,
    augment: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None,
) -> dict[str, Batch]:
    """The drawn samples of each embodiment, history-masked with probability ``history_mask``, their
    camera frames passed through ``augment`` (training's ``[train.augment]``) when given."""
    batches = {}
    for name, count in drawn.items():
        raw = samplers[name].sample(count, rng)
        if history_mask > 0:
            raw = mask_history(raw, samplers[name].obs_fields, history_mask, rng)
        batches[name] = to_torch(raw, device)
        if augment is not None and "image" in batches[name]:
            batches[name]["image"] = augment(batches[name]["image"], rng)
    return batches


def optimizer_step(
    net: torch.nn.Module,
    batches: Mapping[str, Batch],
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    lr: float,
    grad_clip: float,
    device: torch.device,
    compiled: bool = False,
    precision: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One AdamW step on the loss of one embodiment's batch, or of several at once (the mixed loss,
    one trunk pass). Returns the loss, the gradient norm before clipping and whether the step was
    applied: a step whose gradient norm is not finite (a NaN or infinite loss gives one) is not, so
    the weights never take in a non-finite value. The norm is the same on every rank (gradients are
    averaged before it), so every rank makes the same choice."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    if compiled:
        torch.compiler.cudagraph_mark_step_begin()
    with autocast(device, precision):
        if len(batches) == 1:
            name, batch = next(iter(batches.items()))
            loss = net(name, batch)  # HPT.forward is the loss, so DDP and FSDP wrap it unchanged
        else:
            loss = net(None, batches)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if not finite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, False
    optimizer.step()
    return loss, grad_norm, True


def finite(value: torch.Tensor) -> bool:
    """Whether a scalar (a DTensor when sharded) is finite: one device-to-host read."""
    whole = value.full_tensor() if hasattr(value, "full_tensor") else value
    return bool(torch.isfinite(whole).item())


@torch.no_grad()
def validate(model: torch.nn.Module, val: Mapping[str, SequenceSampler | None], cfg: TrainSection, device: torch.device) -> dict[str, float]:
    """Validation loss per embodiment over up to ``val_batches`` batches of its held-out episodes,
    weighted by batch size; the model's train/eval modes are restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    out: dict[str, float] = {}
    for name, sampler in val.items():
        if sampler is None:
            continue
        losses, weights = [], []
        for batch in sampler.batches(cfg.batch_size, limit=cfg.val_batches):
            losses.append(model(name, to_torch(batch, device)).item())  # forward: FSDP gathers around it
            weights.append(len(batch["action"]))
        out[name] = float(np.average(losses, weights=weights))
    for m, mode in modes.items():
        m.training = mode
    return out
