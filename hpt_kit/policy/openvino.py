"""One embodiment's prediction compiled by OpenVINO for the CPU: ``Policy(backend="openvino")``.

The network goes the same way as for the ``onnx`` backend: ``export_onnx`` writes
``HPT.predict(embodiment, ·)`` as an ONNX graph (checked against torch there), and OpenVINO's ONNX
reader turns that graph into its own, which the CPU plugin compiles. So a file written by
``hpt-kit export --onnx`` is also what :meth:`OpenVinoPredictor.load` opens: its ``hpt_kit.*``
metadata comes through as the model's ``framework`` run-time info.

Two settings are not OpenVINO's defaults:

- **fp32 inference.** The CPU plugin runs fp32 graphs in bf16 (or fp16) where the processor has
  those instructions (``INFERENCE_PRECISION_HINT``); on the AMD EPYC here it chose bf16, and the
  actions moved by 7e-4 of their range. This backend asks for f32 and checks every compiled graph
  against torch to :data:`PARITY` of each action dimension's range.
- **A static graph for batch 1.** The graph's batch axis is dynamic; compiled with it, a batch-1 call
  took about 9 ms against 4.8 ms with the batch fixed at 1 (small preset, one thread, a busy
  2-core machine). ``act()`` is always batch 1, so that graph is compiled up front; other batches
  (the policy server's) go through the dynamic one, compiled on first use.

Both compiled graphs use the latency hint (one stream) and ``threads`` inference threads (default:
torch's ``get_num_threads()``, as the onnx backend does).
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpt_kit.core.spec import EmbodimentData, spec_from_dict
from hpt_kit.models.hpt import HPT
from hpt_kit.policy.onnx import (
    FORMAT,
    FORMAT_VERSION,
    ExportError,
    OnnxFileError,
    example_inputs,
    export_onnx,
    graph_feeds,
)

INSTALL = "the openvino backend needs the openvino package: pip install 'hpt-kit[openvino]'"
PARITY = 1e-5  # largest |openvino - torch| / action span accepted after compiling (seen: ~1e-7)


def _ov():
    try:
        import openvino
    except ImportError as exc:
        raise ImportError(INSTALL) from exc
    return openvino


class OpenVinoPredictor:
    """``predictor(history) -> (B, K, A)`` actions in the robot's units, through OpenVINO on the CPU.

    ``OpenVinoPredictor(model, embodiment)`` exports the network's ONNX graph to a temporary file,
    compiles it and checks it against the model at batches 1 and 3; ``OpenVinoPredictor.load(path)``
    opens a file ``hpt-kit export --onnx`` wrote, without a torch model. Calls from several threads
    take turns (one inference request per compiled graph)."""

    def __init__(self, model: HPT, embodiment: str, threads: int | None = None):
        _ov()  # a missing package is said before the export's seconds
        with tempfile.TemporaryDirectory(prefix="hpt-openvino-") as tmp:
            self._open(export_onnx(model, embodiment, Path(tmp) / f"{embodiment}.onnx"), threads)
        self.path = None  # the compiled graphs hold the network; the file is gone
        self._check_parity(model)

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> OpenVinoPredictor:
        """An exported file, its embodiment and spec read from its metadata."""
        predictor = cls.__new__(cls)
        predictor._open(Path(path), threads)
        return predictor

    def _open(self, path: Path, threads: int | None) -> None:
        ov = _ov()
        if not path.is_file():
            raise FileNotFoundError(f"no such ONNX file: {path}")
        self.path: Path | None = path
        self._core = ov.Core()
        graph = self._core.read_model(str(path))
        info = graph.get_rt_info()
        meta = {k: v.astype(str) for k, v in info["framework"].items()} if "framework" in info else {}
        if meta.get("hpt_kit.format") != FORMAT:
            raise OnnxFileError(f"{path} is not an hpt-kit ONNX export (no 'hpt_kit.format' = {FORMAT!r} metadata)")
        if int(meta.get("hpt_kit.format_version", "0")) > FORMAT_VERSION:
            raise OnnxFileError(f"{path} is format version {meta['hpt_kit.format_version']}; this kit reads up to {FORMAT_VERSION}")
        self.metadata: dict[str, str] = meta
        self.embodiment: str = meta["hpt_kit.embodiment"]
        self.spec: EmbodimentData = spec_from_dict(json.loads(meta["hpt_kit.spec"]))
        self.inputs: dict[str, np.dtype] = {i.get_any_name(): _dtype(i.get_element_type(), path) for i in graph.inputs}
        self._config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # not the plugin's bf16/fp16 default on CPUs that have them
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        }
        self._dynamic_graph = graph
        one = self._core.read_model(str(path))
        one.reshape({i.get_any_name(): ov.PartialShape([1, *list(i.get_partial_shape())[1:]]) for i in one.inputs})
        self._compiled: dict[int | None, Any] = {1: self._compile(one)}  # None: the dynamic batch
        self._lock = threading.Lock()

    def _compile(self, graph: Any) -> Any:
        compiled = self._core.compile_model(graph, "CPU", self._config)
        return compiled, compiled.create_infer_request()

    def __call__(self, history: Mapping[str, Any]) -> np.ndarray:
        """``history``: each input field (B, H, ...) as numpy arrays or CPU torch tensors. Returns
        (B, K, A) float32."""
        feeds = graph_feeds(self.inputs, history, self.embodiment)
        batch = len(next(iter(feeds.values())))
        with self._lock:
            key = 1 if batch == 1 else None
            if key not in self._compiled:
                self._compiled[key] = self._compile(self._dynamic_graph)
            compiled, request = self._compiled[key]
            return request.infer(feeds, share_inputs=True)[compiled.output(0)].copy()  # its output buffer is reused

    def _check_parity(self, model: HPT) -> None:
        """Both compiled graphs must give torch's chunks, to ``PARITY`` of each dimension's action range."""
        span = np.maximum(np.subtract(self.spec.action.high, self.spec.action.low), 1e-6).astype(np.float32)
        was_training = model.training
        model.eval()
        try:
            for batch in (1, 3):
                x = example_inputs(self.spec, batch=batch, seed=batch)
                with torch.inference_mode():
                    want = model.predict(self.embodiment, {k: torch.from_numpy(v) for k, v in x.items()}).numpy()
                error = float(np.abs((self(x) - want) / span).max())
                if not error <= PARITY:
                    raise ExportError(
                        f"OpenVINO's CPU graph of embodiment {self.embodiment!r} differs from torch by {error:.3g} of "
                        f"the action range at batch {batch} (bound {PARITY:g}); use backend='onnx' or 'torch'"
                    )
        finally:
            model.train(was_training)


def _dtype(element_type: Any, path: Path) -> np.dtype:
    """An OpenVINO input element type (f32, u8) as a numpy dtype."""
    known = {"f32": np.float32, "u8": np.uint8}
    name = element_type.get_type_name()
    if name not in known:
        raise OnnxFileError(f"{path}: unexpected input type {name}; hpt-kit graphs take {', '.join(known)}")
    return np.dtype(known[name])
