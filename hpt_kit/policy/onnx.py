"""One embodiment's prediction as an ONNX graph, run by ONNX Runtime.

At batch 1 on a CPU, eager PyTorch spends much of ``HPT.predict`` dispatching a few hundred small
operators from Python. ONNX Runtime runs the same graph from C++ with fused kernels (layer norm,
bias + GELU): on 2 cores ``Policy.act()`` went from 4.8 to 3.3 ms (small preset) and from 9.9 to
6.6 ms (base), ``hpt-kit bench --part act --backend both``. It is what ``Policy(backend="onnx")``
and the policy server run, and what a robot without Python torch deploys.

The graph is exactly ``HPT.predict(embodiment, history)``: raw observation history in, normalisation,
stems, trunk, head, un-normalisation, action chunk in the robot's units out. Its inputs are the
embodiment's stem fields, each (batch, H, *step_shape) (``image`` uint8, everything else float32);
its output ``action`` is (batch, K, A) float32. The batch axis is dynamic, so a server can batch
robots. Text and image encoders that turn instructions and raw frames into ``language`` and
``image_features`` are not in the graph; they stay with the caller (``Policy`` runs them in torch).

The file describes itself: ONNX metadata properties (readable by ONNX Runtime in any language, as
``InferenceSession.get_modelmeta().custom_metadata_map``) hold, under ``hpt_kit.*`` keys, the format
and its version, the embodiment, its spec as JSON, the input fields, the kit version and whatever
the exporter adds (the CLI: the checkpoint and its digest). One file to ship, no sidecar to lose.

This module imports torch (it exports, and ``hpt_kit.policy`` imports it anyway); a host without
torch runs the file with ``onnxruntime`` alone, the metadata above telling it the embodiment and the
inputs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpt_kit.core.spec import IMAGE, EmbodimentData, spec_from_dict, spec_to_dict
from hpt_kit.core.version import __version__
from hpt_kit.models.hpt import HPT, ComponentError

FORMAT = "hpt-kit-onnx"
FORMAT_VERSION = 1
OUTPUT = "action"
OPSET = 17  # LayerNormalization is a single op from 17; ONNX Runtime >= 1.17 runs up to 20
PARITY = 1e-3  # largest |onnx - torch| / action span accepted after export (seen: ~1e-7)
INSTALL = "the onnx backend needs onnxruntime and onnx: pip install 'hpt-kit[serve]'"


class ExportError(ComponentError):
    """A network whose prediction cannot become a deterministic ONNX graph; the message names the
    head kind. A :class:`ComponentError` so that the command line reports it in one line."""


class OnnxFileError(ValueError):
    """A file that is not an hpt-kit export this kit can read."""


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(INSTALL) from exc
    return onnxruntime


def graph_fields(spec: EmbodimentData) -> list[str]:
    """The graph's inputs: the fields the stems read, in stem order (the order of ``HPT.tokens``)."""
    return list(dict.fromkeys(s.modality for s in spec.stems))


def example_inputs(spec: EmbodimentData, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the graph's shapes and dtypes. Batch 2 by default: a tracing exporter may
    treat a size-1 axis as constant, and the batch axis must stay dynamic."""
    rng = np.random.default_rng(seed)
    shapes = spec.observation.field_shapes()
    out = {}
    for f in graph_fields(spec):
        shape = (batch, spec.observation_horizon, *shapes[f])
        out[f] = rng.integers(0, 256, shape, dtype=np.uint8) if f == IMAGE else rng.normal(size=shape).astype(np.float32)
    return out


def export_onnx(model: HPT, embodiment: str, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model.predict(embodiment, ·)`` to ``path`` (atomically: a temporary sibling, then a
    rename), with the ``hpt_kit.*`` metadata plus ``metadata``. Traced at batch 2, the graph is then
    run at batches 1 and 3 and compared with torch, so a value the trace froze to the traced batch is
    caught; a head that samples at prediction, or a graph that does not reproduce torch, is an
    :class:`ExportError` naming the head kind."""
    spec = model.specs[embodiment]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checks = [example_inputs(spec, batch=b, seed=b) for b in (1, 3)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.no_grad():
            example = _tensors(example_inputs(spec))
            _check_deterministic(model, embodiment, example)
            references = [model.predict(embodiment, _tensors(x)).numpy() for x in checks]
            tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
            try:
                _torch_export(model, embodiment, example, tmp)
                _write_metadata(tmp, _metadata(model, embodiment, metadata))
                _check_parity(tmp, spec, checks, references)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    finally:
        model.train(was_training)
    return path


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


class PredictGraph(nn.Module):
    """``HPT.predict`` for one embodiment with the history fields as positional inputs, the form an
    exporter traces."""

    def __init__(self, model: HPT, embodiment: str, fields: list[str]):
        super().__init__()
        self.model = model
        self.embodiment = embodiment
        self.fields = fields

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model.predict(self.embodiment, dict(zip(self.fields, inputs)))  # (B, K, A)


def _torch_export(model: HPT, embodiment: str, example: Mapping[str, torch.Tensor], path: Path) -> None:
    """The TorchScript-based (legacy) exporter, ``dynamo=False``. Both exporters of torch 2.14 export
    every built-in stem and head here with the same numbers; this one is chosen because it needs no
    ``onnxscript`` (the dynamo exporter's dependency), exports in about a second where the dynamo one
    takes 5-25 s (the diffusion head's unrolled sampling loop: 24 s), and keeps the batch axis dynamic
    through ``dynamic_axes``. It is deprecated upstream: torch is pinned in constraints.txt, and moving
    to ``dynamo=True`` means passing ``dynamic_shapes`` instead (the example is already batch 2, which
    ``torch.export`` needs so as not to specialise the batch size)."""
    fields = list(example)
    graph = PredictGraph(model, embodiment, fields).eval()
    # Silenced: the exporter's deprecation (see above); tracer warnings about Python values read from
    # tensors (nn.MultiheadAttention's shape checks) and about advanced indexing with negative indices
    # (the gmm head indexes with arange and argmax): export_onnx checks the graph against torch at
    # batches other than the traced one, which is what those warnings are about.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
        try:
            torch.onnx.export(
                graph,
                tuple(example.values()),
                str(path),
                input_names=fields,
                output_names=[OUTPUT],
                dynamic_axes={name: {0: "batch"} for name in [*fields, OUTPUT]},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # noqa: BLE001 - an operator with no ONNX form, a trace that fails
            spec = model.specs[embodiment]
            parts = ", ".join(f"{s.kind} on {s.modality}" for s in spec.stems)
            raise ExportError(
                f"embodiment {embodiment!r} (stems {parts}; head {spec.head.kind!r}) does not export to ONNX: "
                f"{str(exc).strip().splitlines()[0][:300]}; use backend='torch'"
            ) from exc


def _check_deterministic(model: HPT, embodiment: str, example: Mapping[str, torch.Tensor]) -> None:
    """Two torch predictions on one input must agree: a head that samples at prediction has no single
    graph to export (ONNX random ops would draw other numbers)."""
    if not torch.equal(model.predict(embodiment, example), model.predict(embodiment, example)):
        kind = model.specs[embodiment].head.kind
        raise ExportError(
            f"head {kind!r} of embodiment {embodiment!r} samples at prediction (two calls on the same "
            "observation differ), so it has no deterministic ONNX graph; use backend='torch'"
        )


def _metadata(model: HPT, embodiment: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    spec = model.specs[embodiment]
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "embodiment": embodiment,
        "spec": json.dumps(spec_to_dict(spec), sort_keys=True),
        "inputs": json.dumps(graph_fields(spec)),
        "output": OUTPUT,
        "kit_version": __version__,
        "trunk": model.trunk_config.preset or "",
        **(extra or {}),
    }
    return {f"hpt_kit.{k}": str(v) for k, v in meta.items()}


def _write_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(INSTALL) from exc
    proto = onnx.load(str(path), load_external_data=False)  # a graph over 2 GB keeps its data files
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (
        f"hpt-kit {metadata['hpt_kit.embodiment']}: raw observation history -> action chunk "
        f"(batch, K, A) in the robot's units; inputs {metadata['hpt_kit.inputs']}"
    )
    onnx.save(proto, str(path))


def _check_parity(
    path: Path, spec: EmbodimentData, inputs: list[dict[str, np.ndarray]], references: list[np.ndarray]
) -> None:
    """The exported graph must give torch's chunks, to ``PARITY`` of each dimension's action range."""
    options = session_options(1)
    options.log_severity_level = 4  # a failing run is reported below, not logged as well
    predictor = OnnxPredictor.load(path, options=options)
    span = np.maximum(np.subtract(spec.action.high, spec.action.low), 1e-6).astype(np.float32)
    for x, reference in zip(inputs, references):
        batch = len(reference)
        try:
            got = predictor(x)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors have no common public type
            error, problem = float("inf"), f"does not run at batch {batch} ({str(exc).splitlines()[0][:300]})"
        else:
            error = float(np.abs((got - reference) / span).max()) if got.shape == reference.shape else float("inf")
            problem = (
                f"does not reproduce torch's prediction at batch {batch} (largest difference {error:.3g} "
                f"of the action range, shapes {got.shape} vs {reference.shape})"
            )
        if not error <= PARITY:
            raise ExportError(
                f"the ONNX graph of head {spec.head.kind!r} (embodiment {spec.name!r}) {problem}: the trace "
                "kept a value of the traced batch, or the head is not traceable; use backend='torch'"
            )


class OnnxPredictor:
    """``predictor(history) -> (B, K, A)`` actions in the robot's units, through ONNX Runtime.

    ``OnnxPredictor(model, embodiment)`` exports the network's graph first (to ``path``, or to a
    temporary file removed once the session has read it); ``OnnxPredictor.load(path)`` opens an
    exported file without a torch model. ``threads``: ONNX Runtime's intra-op threads (see
    :func:`session_options`).
    """

    def __init__(
        self, model: HPT, embodiment: str, path: str | Path | None = None, threads: int | None = None, int8: bool = False
    ):
        """``int8``: the graph with its matrix weights quantised to int8 (:func:`quantize_int8`)."""
        with tempfile.TemporaryDirectory(prefix="hpt-onnx-") as tmp:
            graph = Path(path) if path is not None and not int8 else Path(tmp) / f"{embodiment}.onnx"
            export_onnx(model, embodiment, graph)
            if int8:
                graph = quantize_int8(graph, Path(path) if path is not None else Path(tmp) / f"{embodiment}.int8.onnx")
            self._open(graph, session_options(threads))
        if path is None:
            self.path = None  # the session holds the graph; the file is gone

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, options: Any = None) -> OnnxPredictor:
        """An exported file, its embodiment and spec read from its metadata. ``options``: ONNX
        Runtime ``SessionOptions`` to use instead of :func:`session_options` ``(threads)``."""
        predictor = cls.__new__(cls)
        predictor._open(Path(path), options or session_options(threads))
        return predictor

    def _open(self, path: Path, options: Any) -> None:
        ort = _ort()
        if not path.is_file():
            raise FileNotFoundError(f"no such ONNX file: {path}")
        self.path: Path | None = path
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self._session.get_modelmeta().custom_metadata_map
        if meta.get("hpt_kit.format") != FORMAT:
            raise OnnxFileError(f"{path} is not an hpt-kit ONNX export (no 'hpt_kit.format' = {FORMAT!r} metadata)")
        if int(meta.get("hpt_kit.format_version", "0")) > FORMAT_VERSION:
            raise OnnxFileError(f"{path} is format version {meta['hpt_kit.format_version']}; this kit reads up to {FORMAT_VERSION}")
        self.metadata: dict[str, str] = dict(meta)
        self.embodiment: str = meta["hpt_kit.embodiment"]
        self.spec: EmbodimentData = spec_from_dict(json.loads(meta["hpt_kit.spec"]))
        self.inputs: dict[str, np.dtype] = {i.name: _dtype(i.type) for i in self._session.get_inputs()}

    def __call__(self, history: Mapping[str, Any]) -> np.ndarray:
        """``history``: each input field (B, H, ...) as numpy arrays or CPU torch tensors (shared, not
        copied, when already of the graph's dtype). Returns (B, K, A) float32."""
        return self._session.run([OUTPUT], graph_feeds(self.inputs, history, self.embodiment))[0]


def graph_feeds(inputs: Mapping[str, np.dtype], history: Mapping[str, Any], embodiment: str) -> dict[str, np.ndarray]:
    """An exported graph's inputs from ``history`` (numpy arrays or CPU torch tensors, shared, not
    copied, when already of the input's dtype); a missing field or a uint8/float mix-up is an error."""
    feeds = {}
    for name, dtype in inputs.items():
        if name not in history:
            raise KeyError(f"the {embodiment!r} graph needs {name!r}; it takes {', '.join(inputs)}")
        x = history[name]
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.dtype != dtype and (dtype == np.uint8 or x.dtype == np.uint8):
            raise TypeError(f"input {name!r} must be {dtype}, got {x.dtype}")
        feeds[name] = np.ascontiguousarray(x, dtype=dtype)
    return feeds


INT8_BOUND = 0.02  # int8 actions' largest difference from fp32, per unit of each dimension's action range


def quantize_int8(source: Path, target: Path) -> Path:
    """``source``'s graph, written to ``target`` with ONNX Runtime's dynamic int8 quantisation: matrix
    weights stored as int8, activations quantised per call; the metadata is kept. About twice as fast
    at batch 1 on the CPU (bench's standard model, one thread, CPU time per call: small 5.2 -> 2.6 ms,
    base 14.0 -> 6.5 ms) at a cost in accuracy: on that untrained model the actions moved by up to
    0.08% of their range, on a briefly trained mujoco-arm4 policy by about 0.75%. ``target`` is
    checked against ``source`` on the export's example inputs; a difference over :data:`INT8_BOUND`
    of a dimension's action range is an error naming the file."""
    ort = _ort()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    root = logging.getLogger()  # the quantiser advises its pre-processing on the root logger at every call
    advice = _Dropped("pre-processing before quantization")
    root.addFilter(advice)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(advice)
    _write_metadata(target, {**meta, "hpt_kit.weights": "int8"})
    spec = spec_from_dict(json.loads(meta["hpt_kit.spec"]))
    feeds = example_inputs(spec, batch=2)
    want, got = (
        ort.InferenceSession(str(f), session_options(1), providers=["CPUExecutionProvider"]).run([OUTPUT], feeds)[0]
        for f in (source, target)
    )
    error = float((np.abs(got - want) / np.subtract(spec.action.high, spec.action.low)).max())
    if not error <= INT8_BOUND:
        raise ExportError(f"{target}: int8 actions differ from fp32 by {error:.2g} of the action range on the "
                          f"example inputs (bound {INT8_BOUND:g})")
    return target


class _Dropped(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def session_options(threads: int | None = None):
    """All graph optimisations, one sequential executor, ``threads`` intra-op threads (default: torch's
    ``get_num_threads()``, so ``torch.set_num_threads(1)`` makes both backends single-threaded).

    Threads spin while waiting for work (ONNX Runtime's default). Measured on 2 cores at batch 1: two
    spinning threads equal one on the small preset (3.3 ms) and beat it on base (6.7 vs 10.2 ms); two
    that sleep lose on both (4.4 and 9.2 ms). The price: in a control loop the second thread spins
    through the simulator's step too, so the process holds both cores. A caller that shares the CPU
    passes ``threads=1``."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return opts


def _dtype(onnx_type: str) -> np.dtype:
    """ONNX Runtime's input type name (``tensor(float)``, ``tensor(uint8)``) as a numpy dtype."""
    known = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}
    if onnx_type not in known:
        raise OnnxFileError(f"unexpected ONNX input type {onnx_type}; hpt-kit graphs take {', '.join(known)}")
    return np.dtype(known[onnx_type])
