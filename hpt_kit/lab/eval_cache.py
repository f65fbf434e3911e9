"""A run's evaluations, kept in the run's folder (``evaluations.json``), so that an experiment re-run or
resumed does not roll out again a policy it has already evaluated with the same settings.

An entry is found by the checkpoint's identity (its step and the sha256 of its weight files: a moved
or copied run still matches, retrained weights never do) and every setting the rollouts depend on
(embodiment, episodes, seed, steps executed per chunk, temporal ensemble, rendering, and the number
of evaluation workers, since batched evaluation rounds differently with it). A damaged or foreign
file is ignored and replaced: the cache only ever saves work.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpt_kit.train.record import write_atomic

log = logging.getLogger(__name__)

CACHE = "evaluations.json"
KEEP = 8  # entries kept per run, newest last: a few settings tried back and forth
FORMAT = "hpt-kit-evaluations"


def checkpoint_identity(folder: Path, step: int) -> dict[str, Any]:
    """The checkpoint's step and the sha256 of each of its ``*.safetensors`` files (LoRA adapters included)."""
    files = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        files[path.name] = digest.hexdigest()
    return {"step": step, "weights_sha256": files}


def entry_key(identity: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"checkpoint": identity, "eval": settings}, sort_keys=True).encode()).hexdigest()


def _entries(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / CACHE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("%s: ignored (%s); the run is evaluated again", path, exc)
        return []
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), list):
        log.warning("%s: not a kit evaluation cache; the run is evaluated again", path)
        return []
    return [e for e in data["entries"] if isinstance(e, dict) and "key" in e]


def cached(run_dir: Path, key: str) -> dict[str, Any] | None:
    """The evaluation stored under ``key`` (None if there is none)."""
    return next((e["result"] for e in _entries(run_dir) if e["key"] == key), None)


def remember(run_dir: Path, key: str, identity: Mapping[str, Any], settings: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """Store ``result`` under ``key`` (written whole: a crash leaves the old file or the new one)."""
    entries = [e for e in _entries(run_dir) if e["key"] != key]
    entries.append({"key": key, "checkpoint": dict(identity), "eval": dict(settings), "result": dict(result)})
    text = json.dumps({"format": FORMAT, "entries": entries[-KEEP:]}, indent=1) + "\n"
    write_atomic(Path(run_dir) / CACHE, text)
