"""Conversions and imports fanned out over an engine: episode ranges as work units, one shard each.

The command (the driver) holds the dataset's lock throughout, so a second writer of the same
dataset is refused. It builds the dataset in a hidden folder beside it, ``.NAME.zarr.parts``
(``plan.json``: the settings and the units; ``shard-NNNNN.zarr``: the finished units), runs the
units not yet finished on the engine (:mod:`hpt_kit.engine`), and once every unit is finished
writes the manifest (:mod:`hpt_kit.data.shards`) and renames the folder into place. A unit writes
its shard through the atomic writer, so a shard exists only when complete: a worker killed mid-unit
leaves a temporary folder, removed when the unit runs again, and the dataset appears only whole.
A unit that keeps no episode (its range past a filtered source's end, or every episode skipped by
``--skip-bad``) writes no shard but a marker, ``shard-NNNNN.zarr.empty``, holding the episodes it
skipped, which the manifest's notes list in their place.

A unit is a function of its settings and its range alone (simulator conversions: episodes
``first`` .. ``first + n - 1`` with their own seeds, as the serial command makes them; imports: the
source's episodes in that range), so the finished dataset holds the serial command's episodes in
the same order, and statistics merged exactly from the shards' sums.

``resume`` keeps the finished shards of a staging folder whose settings match and runs the other
units; without it an unfinished staging folder is removed and the work starts over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpt_kit.core.lock import dataset_lock
from hpt_kit.data.shards import merge_notes, shard_name, write_manifest
from hpt_kit.data.store import Dataset, DatasetError, _replace, replacing
from hpt_kit.engine import UnitError, open_engine, peak_rss_mb, ray_address, start_pool

log = logging.getLogger(__name__)

PLAN = "plan.json"
EMPTY = ".empty"  # beside a unit's shard name: the unit wrote no episodes (JSON: its notes, when it skipped some)
UNITS_PER_WORKER = 4  # default unit size: each worker gets about this many units (resume loses at most one)
ORPHAN_WAIT_S = 600.0  # how long a unit waits for a killed run's worker still writing its shard
PRELOAD = (f"{__name__}_plugins",)  # what a local pool's fork server loads for its workers: every plugin


def start_workers(workers: int, address: str | None = None) -> None:
    """Start the local pool's fork server loading the plugins now, when the units will run in local
    processes: a command calls this first, so that the loading overlaps its own start-up."""
    if workers > 1 and not ray_address(address):
        start_pool(workers, PRELOAD)


@dataclass(frozen=True)
class Unit:
    index: int
    first: int
    episodes: int

    def describe(self) -> str:
        return f"unit {self.index} (episodes {self.first}..{self.first + self.episodes - 1})"


@dataclass(frozen=True)
class UnitTask:
    """What a worker is sent: the job's settings, its unit and the staging folder (plain data)."""

    job: Mapping[str, Any]
    unit: Unit
    folder: str

    def describe(self) -> str:
        return self.unit.describe()


@dataclass
class Progress:
    """Where a fanned-out run stands, after every finished unit."""

    units: int
    episodes: int
    engine: str
    units_done: int = 0
    episodes_done: int = 0
    steps_done: int = 0
    resumed_units: int = 0  # finished by an earlier run
    started: float = field(default_factory=time.perf_counter)
    records: list[Mapping[str, Any]] = field(default_factory=list)  # each unit's record, as they finish

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def frames_per_s(self) -> float:
        return self.steps_done / max(self.seconds, 1e-9)

    @property
    def eta_s(self) -> float | None:
        ran = self.units_done - self.resumed_units
        if ran == 0:
            return None
        left = self.units - self.units_done
        return self.seconds / ran * left


def parts_folder(target: Path) -> Path:
    return target.parent / f".{target.name}.parts"


def plan_units(episodes: int, unit_episodes: int) -> list[Unit]:
    starts = range(0, episodes, unit_episodes)
    return [Unit(i, first, min(unit_episodes, episodes - first)) for i, first in enumerate(starts)]


def run_units(
    target: str | Path,
    job: Mapping[str, Any],
    episodes: int,
    unit_fn: Callable[[UnitTask], Mapping[str, Any]],
    workers: int = 1,
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    unit_episodes: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    final_spec: Callable[..., Any] | None = None,
) -> Path:
    """Run ``job`` as units of ``unit_episodes`` episodes (0: about ``UNITS_PER_WORKER`` per worker)
    into shards and commit the sharded dataset at ``target``; see the module docstring."""
    target = Path(target)
    parts = parts_folder(target)
    job = json.loads(json.dumps(dict(job)))  # the form plan.json holds, compared on resume
    with replacing(target, overwrite):
        with open_engine(workers, address, preload=PRELOAD) as engine:
            size = unit_episodes or max(1, math.ceil(episodes / (UNITS_PER_WORKER * engine.workers)))
            units = _staged_units(parts, job, plan_units(episodes, size), resume)
            progress = Progress(len(units), episodes, engine.name)
            todo = []
            for unit in units:
                if not _unit_done(parts, unit):
                    todo.append(UnitTask(job, unit, str(parts)))
                    continue
                progress.units_done += 1
                progress.resumed_units += 1
                progress.episodes_done += unit.episodes
            if on_progress is not None:
                on_progress(progress)
            try:
                for i, record in engine.run(unit_fn, todo, describe=UnitTask.describe):
                    progress.units_done += 1
                    progress.episodes_done += todo[i].unit.episodes
                    progress.steps_done += int(record["steps"])
                    progress.records.append(record)
                    if on_progress is not None:
                        on_progress(progress)
            except UnitError as exc:
                finished = sum(_unit_done(parts, u) for u in units)
                raise UnitError(
                    f"{target}: {exc}; {finished} of {len(units)} units are finished in {parts}: "
                    "run the command again with --resume to do the rest"
                ) from None
        provenance = {"job": job, "units": [[u.first, u.episodes] for u in units], "engine": engine.name,
                      "host": socket.gethostname()}
        shards = [shard_name(u.index) for u in units if (parts / shard_name(u.index)).is_dir()]
        skipped = _skipped_without_shard(parts, units)
        if not shards:  # every unit finished, with nothing to keep
            shutil.rmtree(parts)
            if any(skipped.values()):
                entries = [e for value in skipped.values() for e in value]
                raise DatasetError(f"{target}: --skip-bad skipped every episode ({len(entries)}); the first, {entries[0]['reason']}")
            raise DatasetError(f"{target}: the source gave no episodes in any unit")
        write_manifest(parts, shards, provenance, final_spec, notes=_merged_notes(parts, units, skipped))
        for leftover in parts.iterdir():  # the plan and what killed workers left: not part of the dataset
            if leftover.name.startswith(".") or leftover.name == PLAN or leftover.name.endswith(EMPTY):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        _replace(parts, target)
    return target


def _staged_units(parts: Path, job: Mapping[str, Any], units: list[Unit], resume: bool) -> list[Unit]:
    """The units to build: a matching unfinished run's when resuming, else ``units`` in a fresh folder."""
    plan_file = parts / PLAN
    if parts.exists():
        try:
            plan = json.loads(plan_file.read_text())
        except (OSError, ValueError):
            plan = None
        if resume and plan is not None:
            if plan["job"] != job:
                differ = sorted(k for k in {*plan["job"], *job} if plan["job"].get(k) != job.get(k))
                raise DatasetError(
                    f"{parts}: the unfinished run there had other settings ({', '.join(differ)}); "
                    "run with the same settings, or without --resume to start again"
                )
            return [Unit(i, first, n) for i, (first, n) in enumerate(plan["units"])]
        log.warning("%s: an unfinished run's shards removed (pass --resume to keep them)", parts)
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    tmp = parts / f".{PLAN}.tmp"
    tmp.write_text(json.dumps({"job": job, "units": [[u.first, u.episodes] for u in units]}, indent=1))
    os.replace(tmp, plan_file)
    return units


def _skipped_without_shard(parts: Path, units: list[Unit]) -> dict[int, list[dict[str, Any]]]:
    """Per unit that wrote no shard: the episodes ``--skip-bad`` skipped in it (its marker's notes)."""
    found = {}
    for unit in units:
        marker = parts / (shard_name(unit.index) + EMPTY)
        if marker.is_file() and not (parts / shard_name(unit.index)).is_dir():
            text = marker.read_text()
            found[unit.index] = json.loads(text).get("skipped_episodes", []) if text.strip() else []
    return found


def _merged_notes(parts: Path, units: list[Unit], skipped: Mapping[int, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The shards' notes merged (None: :func:`write_manifest` merges them), with the episodes skipped
    by units that wrote no shard put in their place among the skipped episodes."""
    if not any(skipped.values()):
        return None
    notes, entries = [], []
    for unit in units:
        if unit.index in skipped:
            entries += skipped[unit.index]
            continue
        shard = Dataset(parts / shard_name(unit.index), verify=False, recovering=False)
        notes.append(shard.notes)
        entries += shard.notes.get("skipped_episodes", [])
    merged = merge_notes(notes)
    merged["skipped_episodes"] = entries
    return merged


def _unit_done(parts: Path, unit: Unit) -> bool:
    return (parts / (shard_name(unit.index) + EMPTY)).exists() or _finished(parts / shard_name(unit.index)) is not None


def _finished(shard: Path) -> Dataset | None:
    """The unit's shard if it is complete; a damaged one is removed so that the unit runs again."""
    if not shard.exists():
        return None
    try:
        return Dataset(shard, recovering=False)
    except DatasetError as exc:
        log.warning("%s: damaged, converted again (%s)", shard, exc)
        shutil.rmtree(shard, ignore_errors=True)
        return None


_REGISTRIES: dict[bool, Any] = {}


def _registry(embodiments: bool = True) -> Any:
    """The plugins, loaded once per worker process."""
    if embodiments not in _REGISTRIES:
        from hpt_kit.core.registry import load_registry

        _REGISTRIES[embodiments] = load_registry(embodiments=embodiments)
    return _REGISTRIES[embodiments]


def _to_do(shard: Path) -> bool:
    """Whether the unit of ``shard`` still has to run: a worker of an earlier, killed run may still
    be writing it (its lock says so); wait for it, and use what it finished."""
    with dataset_lock(shard, wait=ORPHAN_WAIT_S):
        pass
    return _finished(shard) is None


def _record(shard: Path, started: float) -> dict[str, Any]:
    ds = Dataset(shard, verify=False, recovering=False)
    return {"episodes": ds.num_episodes, "steps": ds.num_steps, "seconds": time.perf_counter() - started,
            "host": socket.gethostname(), "pid": os.getpid(), "peak_rss_mb": peak_rss_mb()}


def convert_unit(task: UnitTask) -> dict[str, Any]:
    """One range of a simulator conversion into its shard (runs in a worker)."""
    from hpt_kit.data.convert import convert

    started = time.perf_counter()
    job, unit = task.job, task.unit
    registry = _registry()
    shard = Path(task.folder) / shard_name(unit.index)
    if not _to_do(shard):
        return _record(shard, started)
    convert(
        registry.embodiment(job["embodiment"]), shard, episodes=unit.episodes, first=unit.first, seed=job["seed"],
        render=job["render"], image_encoder=job["image_encoder"], image_encoder_weights=job["image_encoder_weights"],
        image_encoder_resize=job["image_encoder_resize"], registry=registry,
    )
    return _record(shard, started)


def convert_sharded(
    name: str,
    out: str | Path | None = None,
    episodes: int = 50,
    seed: int = 0,
    render: bool = False,
    overwrite: bool = False,
    image_encoder: str | None = None,
    image_encoder_weights: str | None = "imagenet",
    image_encoder_resize: int = 0,
    workers: int = 1,
    address: str | None = None,
    resume: bool = False,
    unit_episodes: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
) -> Path:
    """``hpt-kit convert --workers/--address``: the embodiment ``name``'s conversion of ``episodes``
    episodes as a sharded dataset equal to what :func:`hpt_kit.data.convert.convert` writes whole."""
    from hpt_kit.data.convert import default_dataset_path

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    start_workers(workers, address)
    weights = image_encoder_weights
    if weights and weights not in ("imagenet", "none") and Path(weights).exists():
        weights = str(Path(weights).resolve())  # workers elsewhere see the same file on the shared filesystem
    job = {
        "kind": "convert", "embodiment": name, "episodes": episodes, "seed": seed, "render": render,
        "image_encoder": image_encoder, "image_encoder_weights": weights, "image_encoder_resize": image_encoder_resize,
    }
    target = Path(out) if out is not None else default_dataset_path(name)
    return run_units(target.absolute(), job, episodes, convert_unit, workers, address, resume, overwrite, unit_episodes, on_progress)


class _Counted:
    """An importer whose episodes are counted as they come (an empty range is not an error)."""

    def __init__(self, importer: Any):
        self.importer, self.count = importer, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.importer, name)

    def episodes(self, path: Path, selection: Any) -> Any:
        for episode in self.importer.episodes(path, selection):
            self.count += 1
            yield episode


def import_unit(task: UnitTask) -> dict[str, Any]:
    """One range of a source's episodes imported into its shard (runs in a worker)."""
    from hpt_kit.core.spec import SpecError
    from hpt_kit.data.importing import EverySkipped, ImportOptions, import_dataset

    started = time.perf_counter()
    job, unit = task.job, task.unit
    shard = Path(task.folder) / shard_name(unit.index)
    if not _to_do(shard):
        return _record(shard, started)
    registry = _REGISTRIES.get(True) or _registry(embodiments=False)  # a worker may have every plugin loaded already
    importer = _Counted(registry.importer(job["format"]))
    options = dict(job["options"])
    for key in ("state", "views"):
        options[key] = tuple(options[key]) if options[key] is not None else None
    opts = ImportOptions(**{**options, "first": unit.first, "episodes": unit.episodes})
    marker = Path(task.folder) / (shard_name(unit.index) + EMPTY)
    try:
        import_dataset(importer, job["source"], shard, opts, registry)
    except EverySkipped as exc:  # no shard; the skipped episodes go into the dataset's notes
        tmp = marker.with_name(f".{marker.name}.tmp")
        tmp.write_text(json.dumps({"skipped_episodes": exc.skipped}))
        os.replace(tmp, marker)
        return {"episodes": 0, "steps": 0, "seconds": time.perf_counter() - started}
    except SpecError:
        if importer.count:
            raise
        marker.touch()  # past the end of a filtered selection
        return {"episodes": 0, "steps": 0, "seconds": time.perf_counter() - started}
    return _record(shard, started)


def import_sharded(
    format: str,
    location: str,
    out: str | Path | None = None,
    opts: Any = None,
    overwrite: bool = False,
    workers: int = 1,
    address: str | None = None,
    resume: bool = False,
    unit_episodes: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    registry: Any = None,
) -> Path:
    """``hpt-kit import --workers/--address``: the source's episodes imported in ranges, one shard
    each, as a sharded dataset equal to what :func:`hpt_kit.data.importing.import_dataset` writes
    whole; ``--skip-bad`` notes of every unit are merged in order."""
    import dataclasses

    from hpt_kit.core.importer import ImportSourceError
    from hpt_kit.data.convert import default_dataset_path
    from hpt_kit.data.importing import ImportOptions, default_name, finish_spec, resolve_source

    opts = opts or ImportOptions()
    start_workers(workers, address)  # loads while the source is described
    if registry is None:
        registry = _registry(embodiments=False)
    importer = registry.importer(format)
    if not getattr(importer, "reads_ranges", False):
        raise ImportSourceError(f"importer {format!r} cannot read a range of episodes (reads_ranges); import without --workers")
    path = resolve_source(location)
    if Path(location).exists():
        location = str(Path(location).resolve())  # workers elsewhere read the same file on the shared filesystem
    info = importer.describe(path)
    total = min(opts.episodes, info.episodes) if opts.episodes else info.episodes
    name = opts.name or default_name(dataclasses.replace(info, location=location))
    options = json.loads(json.dumps(dataclasses.asdict(dataclasses.replace(opts, name=name, first=0, episodes=0))))
    if options.get("image_encoder_weights") not in (None, "imagenet", "none") and Path(options["image_encoder_weights"]).exists():
        options["image_encoder_weights"] = str(Path(options["image_encoder_weights"]).resolve())
    job = {"kind": "import", "format": format, "source": location, "episodes": total, "options": options}
    target = Path(out) if out is not None else default_dataset_path(name)

    def final(spec: Any, stats: Mapping[str, Any], lengths: Any) -> Any:
        return finish_spec(spec, stats, lengths)

    return run_units(target.absolute(), job, total, import_unit, workers, address, resume, overwrite, unit_episodes,
                     on_progress, final)
