"""Exporting a kit dataset to another format through an exporter plugin (``hpt-kit data export``).

The kit's part, the same for every format: open and check the dataset, describe it
(:class:`~hpt_kit.core.exporter.ExportSource`), read it one episode at a time with each camera's
frames split out by view name and the episode's instruction as text, and make the write atomic: the
exporter writes into a hidden folder beside the target, renamed into place when it returns. What is
not exported: ``language`` (the instruction's embedding; the text is exported instead) and
``image_features`` (computed from the frames, which are exported).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.core.exporter import ExportEpisode, Exporter, ExportError, ExportOptions, ExportSource
from hpt_kit.core.spec import ACTION, IMAGE, STATE
from hpt_kit.data.importing import IMPORT_NOTE
from hpt_kit.data.store import Dataset
from hpt_kit.data.tools import episode_instructions


def describe_for_export(ds: Dataset) -> ExportSource:
    """The dataset as an exporter sees it. An episode without an instruction gets the dataset's
    description (or its embodiment's name) as its task."""
    spec = ds.spec
    image = spec.observation.image if IMAGE in ds.fields() else None
    texts = [t or default_task(ds) for t in episode_instructions(ds)]
    imported = ds.notes.get(IMPORT_NOTE) if isinstance(ds.notes.get(IMPORT_NOTE), dict) else {}
    return ExportSource(
        location=str(ds.path),
        embodiment=ds.name,
        fps=float(spec.action.control_hz),
        episodes=ds.num_episodes,
        steps=ds.num_steps,
        state_names=tuple(getattr(spec.observation, "state_names", ()) or ()),
        action_names=tuple(getattr(spec.action, "names", ()) or ()),
        state_dim=spec.observation.state_dim,
        action_dim=spec.action.dim,
        views=tuple(image.views) if image is not None else (),
        frame_size=(image.height, image.width) if image is not None else (0, 0),
        tasks=tuple(dict.fromkeys(texts)),
        robot=str(imported.get("robot") or ds.name),
        extra={"kit_version": ds.attrs.get("kit_version", ""), "spec": spec.to_dict(), "notes": ds.notes},
    )


def default_task(ds: Dataset) -> str:
    return ds.spec.description or ds.name


def export_episodes(ds: Dataset, source: ExportSource) -> Iterator[ExportEpisode]:
    texts = [t or default_task(ds) for t in episode_instructions(ds)]
    for index in range(ds.num_episodes):
        start, end = int(ds.episode_starts[index]), int(ds.episode_ends[index])
        state = np.asarray(ds.array(STATE)[start:end], dtype=np.float32)
        action = np.asarray(ds.array(ACTION)[start:end], dtype=np.float32)
        views: dict[str, np.ndarray] = {}
        if source.views:
            frames = np.asarray(ds.array(IMAGE)[start:end])  # (T, V, H, W, 3)
            views = {name: frames[:, v] for v, name in enumerate(source.views)}
        yield ExportEpisode(index, state, action, views, texts[index])


def export_dataset(
    exporter: Exporter,
    dataset: str | Path,
    out: str | Path,
    options: ExportOptions = ExportOptions(),
    overwrite: bool = False,
    on_episode: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the dataset at ``dataset`` to the folder ``out`` in ``exporter``'s format. An existing
    ``out`` is replaced only with ``overwrite``, and only once the new export is complete; a failed
    export leaves nothing behind. ``on_episode(i, steps)`` reports progress."""
    ds = Dataset(dataset)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    if out.resolve() == ds.path.resolve() or ds.path.resolve() in out.resolve().parents:
        raise ExportError(f"{out}: the export cannot go into the dataset it reads ({ds.path})")
    source = describe_for_export(ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        exporter.export(source, _reported(export_episodes(ds, source), on_episode), tmp, options)
        _replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"{out}: cannot write the export ({exc.strerror or exc}); nothing was changed") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _reported(episodes: Iterator[ExportEpisode], on_episode: Callable[[int, int], None] | None) -> Iterator[ExportEpisode]:
    for ep in episodes:
        yield ep
        if on_episode is not None:
            on_episode(ep.index, len(ep.action))


def _replace(tmp: Path, out: Path) -> None:
    """``tmp`` renamed to ``out``; an existing ``out`` is moved away first and removed after."""
    old: Path | None = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()


def export_summary(out: Path) -> dict[str, Any]:
    """Files and bytes under an export, for the command's report."""
    files = [p for p in out.rglob("*") if p.is_file()]
    return {"path": str(out), "files": len(files), "bytes": sum(p.stat().st_size for p in files)}
