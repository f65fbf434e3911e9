"""Whether a faster backend acts like the network it was made from: ``hpt-kit eval RUN --backend torch
--backend onnx-int8``.

Quantisation is checked when the graph is made (``quantize_int8``: actions within 2% of each
dimension's range on random inputs), but random inputs are not a robot's. Two measures on the run's
own data say more:

- **success rate** on the same simulator episodes (same seeds) for each backend, the difference to
  the first (reference) backend with Newcombe's paired interval (``core.stats.paired_difference``);
- **actions on the held-out episodes** (the run's validation split, as ``train.offline`` takes it):
  each backend's chunk for every window, its first action's mean absolute error against the recorded
  action, and its difference from the reference backend's chunk per unit of each dimension's action
  range (largest and mean).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hpt_kit.core.spec import ACTION
from hpt_kit.models.hpt import HPT
from hpt_kit.policy.closed_loop import graph_predictor
from hpt_kit.train.offline import held_out, held_out_episodes


def predictors(model: HPT, name: str, backends: Sequence[str]) -> dict[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]]:
    """``history -> (B, K, A)`` numpy actions for each backend, all on the CPU."""
    model = model.cpu().eval()

    def eager(history: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model.predict(name, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in history.items()}).numpy()

    return {b: eager if b == "torch" else graph_predictor(model, name, b) for b in backends}


def held_out_agreement(
    model: HPT, name: str, description: Mapping[str, Any], backends: Sequence[str], batch_size: int = 256
) -> dict[str, Any]:
    """The held-out windows of ``name``'s run through every backend: per backend the first action's
    mean absolute error against the recorded one (robot units, mean over dimensions), and, beside the
    first backend, the largest and mean difference of its whole chunk from that backend's, per unit
    of each dimension's action range."""
    spec = model.specs[name]
    ds, val = held_out(description, name, spec)
    run = predictors(model, name, backends)
    fields = [s.modality for s in spec.stems]
    span = np.maximum(np.subtract(spec.action.high, spec.action.low), 1e-6)
    first_error = {b: 0.0 for b in backends}
    largest = {b: 0.0 for b in backends[1:]}
    total = {b: 0.0 for b in backends[1:]}
    for i in range(0, len(val), batch_size):
        raw = val.batch(np.arange(i, min(i + batch_size, len(val))))
        history = {f: raw[f] for f in fields}
        chunks = {b: predict(history).astype(np.float64) for b, predict in run.items()}  # (B, K, A) each
        for b, chunk in chunks.items():
            first_error[b] += float(np.abs(chunk[:, 0] - raw[ACTION][:, 0]).mean(axis=1).sum())
        reference = chunks[backends[0]]
        for b in backends[1:]:
            moved = np.abs(chunks[b] - reference) / span  # (B, K, A), per unit of each dimension's range
            largest[b] = max(largest[b], float(moved.max()))
            total[b] += float(moved.mean(axis=(1, 2)).sum())
    n = len(val)
    return {
        "windows": n,
        "episodes": held_out_episodes(ds, val),
        "dataset": str(ds.path),
        "reference": backends[0],
        "first_action_mae": {b: first_error[b] / n for b in backends},
        "max_difference": largest,  # per unit of action range, over every window, chunk step and dimension
        "mean_difference": {b: total[b] / n for b in backends[1:]},
    }
