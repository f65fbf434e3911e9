"""What the policy server serves, without the network: one network holding the shared trunk once and
every served embodiment's stems, heads and normalisers; one closed-loop :class:`Policy` per robot
(history, queued chunk, temporal ensembling, exactly as in-process); observation checks that name
the field; and batched prediction across robots and embodiments through one trunk pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hpt_kit.core.recipe import planned_eval
from hpt_kit.core.registry import Registry
from hpt_kit.core.spec import (
    IMAGE,
    IMAGE_FEATURES,
    INSTRUCTION,
    LANGUAGE,
    EmbodimentData,
    action_labels,
    state_labels,
)
from hpt_kit.core.version import __version__
from hpt_kit.models.hpt import HPT
from hpt_kit.policy import Policy
from hpt_kit.weights.checkpoint import Checkpoint, resolve_checkpoint
from hpt_kit.weights.tensors import load_strict, tensor_digest

PER_EMBODIMENT = ("stems.", "heads.", "normalizers.")


class ServeError(ValueError):
    """A request or a set of checkpoints the server refuses; the message names the field or file."""


@dataclass(frozen=True)
class Served:
    """One served embodiment: its spec and its chunk execution: the run's plan (``[eval]``) unless
    ``serve --execute-steps/--temporal-ensemble`` chose (``chunks_from``: "recipe" or "option")."""

    spec: EmbodimentData
    execute_steps: int
    ensemble: float | None
    checkpoint: str
    chunks_from: str = "recipe"

    def chunk_mode(self) -> str:
        """The chunk execution in words, for the console."""
        horizon = self.spec.action_horizon
        if self.ensemble is not None:
            return f"temporal ensemble m={self.ensemble:g} (a chunk predicted every step)"
        steps = self.execute_steps or horizon
        return f"{steps} of each {horizon}-step chunk executed" + (" (the whole chunk)" if steps == horizon else "")


class Fleet:
    def __init__(
        self, model: HPT, served: Mapping[str, Served], trunk_sha256: str, device: torch.device, backend: str = "torch"
    ):
        """``backend="onnx"``: each embodiment's predictions through its ONNX Runtime graph (one pass
        per embodiment in a batch, rather than one trunk pass for all); CPU only. ``"onnx-int8"``:
        the same with int8 weights (opt-in, not exact; see ``hpt_kit.policy.onnx.quantize_int8``);
        ``"openvino"``: the same graphs compiled by OpenVINO (``hpt_kit.policy.openvino``)."""
        self.model = model.to(device).eval()
        self.served = dict(served)
        self.trunk_sha256 = trunk_sha256
        self.device = device
        self.backend = backend
        self._fields = {name: _fields(s.spec) for name, s in self.served.items()}  # read on every request
        self._bounds = {
            name: (np.asarray(s.spec.action.low, np.float32), np.asarray(s.spec.action.high, np.float32))
            for name, s in self.served.items()
        }
        self._onnx: dict[str, Any] = {}
        if backend in ("onnx", "onnx-int8", "openvino"):
            from hpt_kit.policy.closed_loop import graph_predictor

            if device.type != "cpu":
                raise ServeError(f"backend: {backend} runs on the CPU, not {device}")
            self._onnx = {name: graph_predictor(self.model, name, backend) for name in self.served}
        elif backend != "torch":
            raise ServeError(f"backend: torch, onnx, onnx-int8 or openvino, not {backend!r}")

    @classmethod
    def load(cls, locations: Sequence[str], registry: Registry, device: str = "cpu", backend: str = "torch") -> Fleet:
        """Every embodiment of the checkpoints at ``locations``, on one trunk. Checkpoints whose
        trunks differ (a fine-tuned trunk) cannot share it and are refused, as is an embodiment
        name two checkpoints both hold."""
        ckpts = [resolve_checkpoint(loc) for loc in locations]
        adapted = [str(c.path) for c in ckpts if c.description.get("lora")]
        if adapted:  # their trunks differ from the shared one by the adapters (not served yet)
            raise ServeError(f"{adapted[0]} was trained with LoRA adapters, which the server does not serve yet; "
                             "evaluate it with `hpt-kit eval` or Policy.from_checkpoint")
        tensors = [c.tensors() for c in ckpts]
        digests = [tensor_digest({k: v for k, v in t.items() if k.startswith("trunk.")}) for t in tensors]
        if len(set(digests)) > 1:
            listed = "; ".join(f"{c.path}: trunk sha256 {d[:12]}" for c, d in zip(ckpts, digests))
            raise ServeError(f"these checkpoints have different trunks and cannot share one server: {listed}")
        served, specs, stats, merged = {}, {}, {}, {k: v for k, v in tensors[0].items() if k.startswith("trunk.")}
        for ckpt, own in zip(ckpts, tensors):
            for name, spec in ckpt.specs.items():
                if name in served:
                    raise ServeError(f"embodiment {name!r} is in both {served[name].checkpoint} and {ckpt.path}")
                served[name] = _served(ckpt, name, spec)
                specs[name], stats[name] = spec, ckpt.stats[name]
                merged.update({k: v for k, v in own.items() if k.startswith(tuple(p + name + "." for p in PER_EMBODIMENT))})
        model = HPT(ckpts[0].trunk_config, specs, stats, registry, pretrained=False)
        load_strict(model, merged, ", ".join(str(c.path) for c in ckpts))
        return cls(model, served, digests[0], torch.device(device), backend)

    def set_chunks(self, embodiment: str, execute_steps: int | None = None, ensemble: float | None = None) -> None:
        """Serve ``embodiment`` with this chunk execution instead of its run's plan: ``execute_steps``
        (0 = the whole chunk) or temporal ensembling with ``ensemble`` = m; robots reset after it get it."""
        if embodiment not in self.served:
            raise ServeError(f"embodiment: unknown {embodiment!r}; served: {', '.join(self.served)}")
        s = self.served[embodiment]
        if execute_steps is not None and ensemble is not None:
            raise ServeError(f"{embodiment}: choose execute_steps or temporal ensembling, not both")
        if execute_steps is not None and not 0 <= execute_steps <= s.spec.action_horizon:
            raise ServeError(f"{embodiment}: execute_steps {execute_steps} is outside 0..{s.spec.action_horizon} (its action horizon)")
        if ensemble is not None and not (np.isfinite(ensemble) and ensemble >= 0):
            raise ServeError(f"{embodiment}: temporal ensembling needs a finite m >= 0, got {ensemble}")
        self.served[embodiment] = dataclasses.replace(
            s, execute_steps=execute_steps or 0, ensemble=ensemble, chunks_from="option"
        )

    def clip(self, embodiment: str, action: np.ndarray) -> tuple[np.ndarray, int]:
        """``action`` within the embodiment's advertised bounds, and how many of its values were outside."""
        low, high = self._bounds[embodiment]
        clipped = np.clip(action, low, high)
        return clipped, int(np.count_nonzero(clipped != action))

    def metadata(self) -> dict[str, Any]:
        """What a client needs to drive its robot: each embodiment's spec, action bounds, control
        rate, the observation fields with shapes and dtypes, and the trunk and kit versions."""
        return {
            "kit_version": __version__,
            "backend": self.backend,
            "trunk": {**self.model.trunk_config.to_dict(), "sha256": self.trunk_sha256},
            "embodiments": {
                name: {
                    "spec": s.spec.to_dict(),
                    "action_low": list(s.spec.action.low),
                    "action_high": list(s.spec.action.high),
                    "action_clipped": True,  # every served action lies within [action_low, action_high]
                    "action_names": list(action_labels(s.spec.action)),
                    "state_names": list(state_labels(s.spec.observation)),
                    "cameras": list(s.spec.observation.image.views) if s.spec.observation.image is not None else [],
                    "control_hz": s.spec.action.control_hz,
                    "observation": {f: {"shape": list(shape), "dtype": dtype} for f, (shape, dtype) in self.fields(name).items()},
                    "execute_steps": s.execute_steps,
                    "temporal_ensemble": s.ensemble,
                    "chunks_from": s.chunks_from,
                    "checkpoint": s.checkpoint,
                }
                for name, s in self.served.items()
            },
        }

    def policy(self, embodiment: str) -> Policy:
        """A new robot's closed-loop state on the shared network."""
        if embodiment not in self.served:
            raise ServeError(f"embodiment: unknown {embodiment!r}; served: {', '.join(self.served)}")
        s = self.served[embodiment]
        return Policy(self.model, embodiment, s.execute_steps, s.ensemble, device=self.device)

    def fields(self, embodiment: str) -> dict[str, tuple[tuple[int, ...], str]]:
        """The observation fields a robot sends each step, with their shapes and dtypes."""
        return self._fields[embodiment]

    def check(self, embodiment: str, observation: Any) -> dict[str, Any]:
        """The observation as the policy takes it, or a ServeError naming the field."""
        if not isinstance(observation, Mapping):
            raise ServeError(f"observation: a map of fields, got {type(observation).__name__}")
        out: dict[str, Any] = {}
        for field, (shape, dtype) in self.fields(embodiment).items():
            if field not in observation:
                raise ServeError(f"observation.{field}: missing ({embodiment} needs {', '.join(self.fields(embodiment))})")
            out[field] = _checked(field, observation[field], shape, dtype)
        return out

    @torch.inference_mode()
    def predict(self, requests: Sequence[tuple[str, Mapping[str, torch.Tensor]]]) -> list[np.ndarray]:
        """Chunks (K, A) for many robots' histories at once: grouped by embodiment, stems and heads
        per embodiment, one trunk pass for all. One robot's request goes straight to the network, its
        history buffers as they are, as ``Policy.act`` in process does."""
        if len(requests) == 1:
            name, history = requests[0]
            chunk = torch.from_numpy(self._onnx[name](history)) if self._onnx else self.model.predict(name, history)
            return [chunk[0].cpu().numpy()]
        groups: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(requests):
            groups.setdefault(name, []).append(i)
        batches = {n: {f: torch.cat([requests[i][1][f] for i in idx]) for f in requests[idx[0]][1]} for n, idx in groups.items()}
        if self._onnx:
            chunks = {n: torch.from_numpy(self._onnx[n](batch)) for n, batch in batches.items()}
        else:
            chunks = self.model.predict_mixed(batches)
        out: list[np.ndarray] = [np.empty(0)] * len(requests)
        for name, idx in groups.items():
            for row, i in enumerate(idx):
                out[i] = chunks[name][row].cpu().numpy()
        return out


def _fields(spec: EmbodimentData) -> dict[str, tuple[tuple[int, ...], str]]:
    shapes = spec.observation.field_shapes()
    out = {}
    for stem in spec.stems:
        field = stem.modality
        if field == IMAGE_FEATURES and spec.observation.image is not None and spec.observation.image_features.encoder:
            field = IMAGE  # the server encodes frames itself, as Policy does
        if field == LANGUAGE and spec.observation.language.encoder:
            out[INSTRUCTION] = ((), "str")
            continue
        out[field] = (shapes[field], "uint8" if field == IMAGE else "float32")
    return out


def _served(ckpt: Checkpoint, name: str, spec: EmbodimentData) -> Served:
    planned = planned_eval(ckpt.description, f"{ckpt.path}: recipe eval")
    ensemble = planned.temporal_ensemble or None
    return Served(spec, 0 if ensemble else planned.execute_steps, ensemble, str(ckpt.path))


def _checked(field: str, value: Any, shape: tuple[int, ...], dtype: str) -> Any:
    if dtype == "str":
        if not isinstance(value, str):
            raise ServeError(f"observation.{field}: a string, got {type(value).__name__}")
        return value
    if not isinstance(value, np.ndarray):
        raise ServeError(f"observation.{field}: an array, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ServeError(f"observation.{field}: shape {tuple(value.shape)}, expected {tuple(shape)}")
    if dtype == "uint8" and value.dtype != np.uint8:
        raise ServeError(f"observation.{field}: dtype {value.dtype}, expected uint8 frames")
    if dtype != "uint8":
        if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
            raise ServeError(f"observation.{field}: dtype {value.dtype} is not numeric")
        bad = np.flatnonzero(~np.isfinite(value))
        if len(bad):
            raise ServeError(f"observation.{field}: non-finite value at index {int(bad[0])}")
        value = value.astype(np.float32)
    return value
