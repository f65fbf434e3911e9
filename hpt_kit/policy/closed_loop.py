"""Closed-loop control with a trained HPT network.

:class:`Policy` is what a rollout runner drives (the ``Controller`` protocol): it keeps the last
``observation_horizon`` observations in preallocated buffers and turns the network's action chunks
into one action per step, in one of two ways:

- **open loop** (default): predict a chunk, execute its first ``execute_steps`` actions, predict again.
  Cheap, but the robot acts blind between predictions and the motion can jump where chunks meet.
- **temporal ensembling** (``ensemble=m``): predict a chunk at every step and execute, for step t, the
  weighted mean of every prediction made for t by the chunks still covering it (at most
  ``action_horizon`` of them). Ordered oldest first, prediction i weighs ``exp(-m * i)``: with m > 0
  the older predictions count more, which smooths the motion; m = 0 averages them equally. A good
  first value is m = 0.01 (ACT's).

The network runs on ``torch`` (eager, or ``torch.compile`` with ``compile=True``) or on a graph of
it on the CPU: ``onnx``, the prediction exported once to an ONNX graph and run by ONNX Runtime
(``hpt_kit/policy/onnx.py``), about 1.5x faster at batch 1, where eager PyTorch is bound by
per-operator overhead; ``openvino``, that graph compiled by OpenVINO (``hpt_kit/policy/openvino.py``);
``onnx-int8``, opt-in and not exact. Either way the encoders of instructions and raw frames run in torch.

An embodiment whose language spec names a text encoder is told its task in words: the runner passes
``observation["instruction"]`` (a string) and the policy encodes it with that encoder, each distinct
instruction once, exactly as conversion encoded the training data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from hpt_kit.core.registry import Registry, UnknownNameError, load_registry
from hpt_kit.core.spec import IMAGE, IMAGE_FEATURES, INSTRUCTION, LANGUAGE
from hpt_kit.models.hpt import HPT
from hpt_kit.models.vision import ResNetEncoder, encode_frames, frozen_encoder

_DTYPES = {IMAGE: torch.uint8}  # history buffers hold what the stems take; everything else float32
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")
_RUNTIMES = {"onnx": "ONNX Runtime", "onnx-int8": "ONNX Runtime", "openvino": "OpenVINO"}


def _check_backend(backend: str, compile: bool, device: torch.device) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend != "torch" and compile:
        raise ValueError(f"compile=True is for the torch backend; the {backend} backend has {_RUNTIMES[backend]}'s own optimisations")
    if backend != "torch" and device.type != "cpu":
        raise ValueError(f"the {backend} backend runs on the CPU ({_RUNTIMES[backend]}), not {device}; use device='cpu'")


def graph_predictor(model: HPT, embodiment: str, backend: str):
    """The callable ``history -> (B, K, A)`` numpy actions of a graph backend (``onnx``,
    ``onnx-int8``, ``openvino``). Imported here: their runtimes are optional dependencies
    (``hpt-kit[serve]``, ``hpt-kit[openvino]``)."""
    if backend == "openvino":
        from hpt_kit.policy.openvino import OpenVinoPredictor

        return OpenVinoPredictor(model, embodiment)
    from hpt_kit.policy.onnx import OnnxPredictor

    return OnnxPredictor(model, embodiment, int8=backend == "onnx-int8")


class Policy:
    def __init__(
        self,
        model: HPT,
        embodiment: str,
        execute_steps: int = 0,
        ensemble: float | None = None,
        device: str | torch.device = "cpu",
        compile: bool = False,
        registry: Registry | None = None,
        backend: str = "torch",
    ):
        """``execute_steps``: open-loop steps per chunk (0 = the whole chunk). ``ensemble``: None for
        open loop, or the m >= 0 of temporal ensembling, which replans every step (so it cannot be
        combined with ``execute_steps``). ``compile``: run the prediction through ``torch.compile``
        (fused kernels for the fixed batch-1 shapes; the first call compiles, tens of seconds).
        ``registry`` resolves the text encoder a language spec names (default: the installed ones).
        ``backend``: ``"torch"`` or ``"onnx"`` (CPU only; the graph is exported here, from the
        weights as they are now, in about a second; needs ``hpt-kit[serve]``), or, opt-in,
        ``"onnx-int8"``: that graph with int8 weights, about 2x faster and not exact (actions within
        ``hpt_kit.policy.onnx.INT8_BOUND`` of fp32 on the export's example inputs, checked), or
        ``"openvino"``: that graph compiled by OpenVINO for the CPU in fp32 (``hpt-kit[openvino]``)."""
        if embodiment not in model.specs:
            raise UnknownNameError(f"the model has no embodiment {embodiment!r}; it has: {', '.join(model.specs)}")
        _check_backend(backend, compile, torch.device(device))
        if ensemble is not None:
            if not (math.isfinite(ensemble) and ensemble >= 0):
                raise ValueError(f"temporal ensembling needs a finite m >= 0, got {ensemble}")
            if execute_steps > 0:
                raise ValueError("choose execute_steps or temporal ensembling, not both: ensembling replans each step")
        self.model = model.to(device).eval()
        self.embodiment = embodiment
        self.spec = model.specs[embodiment]
        horizon = self.spec.action_horizon
        self.execute_steps = execute_steps if execute_steps > 0 else horizon
        if self.execute_steps > horizon:
            raise ValueError(f"execute_steps {execute_steps} exceeds the action horizon {horizon}")
        self.ensemble = ensemble
        self.device = torch.device(device)
        # On a GPU, compiled predictions replay as one CUDA graph (the history buffers are static).
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        self._compiled = torch.compile(model.predict, dynamic=False, mode=mode) if compile else None
        self.backend = backend
        self._onnx = graph_predictor(self.model, embodiment, backend) if backend != "torch" else None
        obs = self.spec.observation
        shapes = obs.field_shapes()
        H, A = self.spec.observation_horizon, self.spec.action.dim
        self._fields = [s.modality for s in self.spec.stems]
        self._history = {
            f: torch.zeros((1, H, *shapes[f]), dtype=_DTYPES.get(f, torch.float32), device=self.device)
            for f in self._fields
        }
        # Features precomputed at conversion: the same frozen encoder computes them from rendered frames.
        # Built on the first raw frames only (it may need a download or the weights file), so callers
        # that pass image_features never need it.
        encoder = obs.image_features.encoder if obs.image_features is not None else None
        usable = IMAGE_FEATURES in self._fields and obs.image is not None
        self._encoder_spec = encoder if usable else None
        self._encoder: ResNetEncoder | None = None
        language = obs.language
        self._instructions = None
        if LANGUAGE in self._fields and language.encoder:
            from hpt_kit.core.language import instructions_for

            self._instructions = instructions_for(language, registry or load_registry(embodiments=False))
        self._queue: np.ndarray = np.zeros((0, A), dtype=np.float32)
        # Temporal ensembling: the last K chunks, oldest first; only the last ``_chunk_count`` rows are live.
        self._chunks = np.zeros((horizon, horizon, A), dtype=np.float32)  # (K chunks, K steps, A)
        self._chunk_count = 0
        self._steps = 0

    @classmethod
    def from_checkpoint(
        cls,
        location: str | Path,
        embodiment: str | None = None,
        execute_steps: int = 0,
        ensemble: float | None = None,
        device: str | torch.device = "cpu",
        compile: bool = False,
        registry: Registry | None = None,
        backend: str = "torch",
    ) -> Policy:
        """A policy from a checkpoint folder, run directory or ``hf://`` location; ``embodiment``
        defaults to the checkpoint's first. The other arguments are the constructor's; ``registry``
        also resolves the checkpoint's stem and head kinds (for components of plugins not installed)."""
        from hpt_kit.weights.checkpoint import resolve_checkpoint

        model = HPT.from_checkpoint(resolve_checkpoint(location), registry or load_registry(embodiments=False))
        name = embodiment or next(iter(model.specs))
        return cls(
            model, name, execute_steps, ensemble, device=device, compile=compile, registry=registry, backend=backend
        )

    def replica(self) -> Policy:
        """A new closed-loop state (empty history and queue) on the same network, with the same chunk
        execution, backend and encoders: one per robot when many are driven at once (the batched,
        parallel evaluation in :mod:`hpt_kit.policy.parallel`)."""
        other = object.__new__(Policy)
        other.__dict__.update(self.__dict__)
        other._history = {f: torch.zeros_like(h) for f, h in self._history.items()}
        other._chunks = np.zeros_like(self._chunks)
        other.reset()
        return other

    @property
    def needs_images(self) -> bool:
        """Whether ``act`` needs rendered camera frames (``RolloutRequest(render=True)``)."""
        return IMAGE in self._fields or self._encoder_spec is not None

    def reset(self) -> None:
        self._queue = self._queue[:0]
        self._chunk_count = 0
        self._steps = 0

    @torch.inference_mode()
    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """One observation (unbatched, e.g. ``{"state": (S,)}``) -> one action (action_dim,).

        Images are uint8 (views, H, W, 3). A policy trained on precomputed ``image_features`` takes
        either those or the raw ``image``, which it encodes itself."""
        chunk = self._predict()[0].cpu().numpy() if self.observe(observation) else None
        return self.take(chunk)

    @torch.inference_mode()
    def observe(self, observation: Mapping[str, np.ndarray]) -> bool:
        """The first half of :meth:`act`: push the observation into the history; whether this step
        needs a new chunk (always with ensembling; when the queue is empty otherwise). A caller that
        batches many robots' predictions (the policy server) predicts from :attr:`history` and hands
        the chunk to :meth:`take`."""
        for f in self._fields:
            hist = self._history[f]
            if f == IMAGE_FEATURES and f not in observation and self._encoder_spec is not None:
                if self._encoder is None:
                    self._encoder = frozen_encoder(self._encoder_spec).to(self.device)
                frames = torch.as_tensor(observation[IMAGE], device=self.device)
                x = encode_frames(self._encoder, frames)  # (V, tokens, C)
            else:
                x = torch.as_tensor(self._observed(observation, f), device=self.device)
                if hist.dtype == torch.uint8 and x.dtype != torch.uint8:
                    raise TypeError(f"observation {f!r} must be uint8 frames, got {x.dtype}")
                x = x.to(hist.dtype)
            if self._steps == 0:
                hist.copy_(x.expand_as(hist))  # the history before the first step repeats it
            else:
                hist[:, :-1] = hist[:, 1:].clone()
                hist[:, -1] = x
        self._steps += 1
        return self.ensemble is not None or len(self._queue) == 0

    def take(self, chunk: np.ndarray | None) -> np.ndarray:
        """The second half of :meth:`act`: this step's action, from ``chunk`` (K, A) in the robot's
        units when :meth:`observe` asked for one, else from the queue."""
        if self.ensemble is not None:
            return self._ensembled(chunk)
        if chunk is not None:
            self._queue = chunk[: self.execute_steps]
        action, self._queue = self._queue[0], self._queue[1:]
        return action

    @property
    def history(self) -> dict[str, torch.Tensor]:
        """The network's input for this step: each stem's field, (1, H, ...)."""
        return self._history

    def _predict(self) -> torch.Tensor:
        """The network's chunk for the current history, (1, K, A), from the chosen backend (a graph
        backend reads the CPU history buffers without a copy; its array is wrapped, not copied)."""
        if self._onnx is not None:
            return torch.from_numpy(self._onnx(self._history))
        return (self._compiled or self.model.predict)(self.embodiment, self._history)

    def _observed(self, observation: Mapping[str, np.ndarray], field: str) -> np.ndarray:
        """One field of the observation; ``language`` comes from the ``instruction`` text if need be."""
        if field == LANGUAGE and LANGUAGE not in observation and self._instructions is not None:
            if INSTRUCTION not in observation:
                raise KeyError(
                    f"embodiment {self.embodiment!r} is conditioned on language: pass the task as "
                    f"observation[{INSTRUCTION!r}] (a string) or its encoding as observation[{LANGUAGE!r}]"
                )
            text = observation[INSTRUCTION]
            return self._instructions(text).copy()  # (tokens, channels), encoded once per text
        return observation[field]

    def _ensembled(self, chunk: np.ndarray) -> np.ndarray:
        """Push this step's chunk (K, A); return the weighted mean of all predictions for this step."""
        K = len(self._chunks)
        self._chunks[:-1] = self._chunks[1:]
        self._chunks[-1] = chunk
        n = self._chunk_count = min(self._chunk_count + 1, K)
        age = np.arange(n)[::-1]  # steps since each live chunk was predicted, oldest first
        predictions = self._chunks[K - n :][np.arange(n), age]  # (n, A): each chunk's entry for this step
        weights = np.exp(-self.ensemble * np.arange(n))  # (n,): the oldest first, weighted most for m > 0
        return (weights @ predictions / weights.sum()).astype(np.float32)
