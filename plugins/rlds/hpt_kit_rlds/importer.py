"""The ``rlds`` importer: RLDS episodes in TFDS TFRecord shards, as the Open X-Embodiment datasets ship.

The metadata (``dataset_info.json``, ``features.json``) gives the splits, the shards, the episode
counts and every feature's shape and dtype, so ``describe`` reads no shard except the first record,
for the instruction. ``episodes`` streams the split's shards in order (``records.py``: every frame's
two CRC-32C checksums verified; a record that fails is a bad episode naming shard and record),
parsing each episode's ``tf.train.Example`` and converting only the keys asked for. TensorFlow is
never imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from hpt_kit.core.importer import (
    IMAGE,
    TEXT,
    VECTOR,
    Feature,
    ImportSourceError,
    Selection,
    SourceEpisode,
    SourceInfo,
)

from hpt_kit_rlds import decode
from hpt_kit_rlds.records import read_frames
from hpt_kit_rlds.schema import (
    FEATURES_FILE,
    INFO_FILE,
    STEPS,
    DatasetInfo,
    Leaf,
    Schema,
    Split,
    read_info,
    read_schema,
    version_folder,
)

NAME = "rlds"
STATE_KEY = f"{STEPS}/observation/state"
ACTION_KEY = f"{STEPS}/action"
INSTRUCTION_KEY = f"{STEPS}/language_instruction"
OBSERVATION = f"{STEPS}/observation/"
COUNTERS = (
    f"{STEPS}/is_first",
    f"{STEPS}/is_last",
    f"{STEPS}/is_terminal",
    f"{STEPS}/reward",
    f"{STEPS}/discount",
)
OPTIONS = {
    "split": "the TFDS split to read (default: train)",
    "instruction": "the text key whose first step is the episode's instruction (default: steps/language_instruction)",
}


@dataclass(frozen=True)
class Source:
    folder: Path  # the TFDS version folder
    info: DatasetInfo
    schema: Schema


@dataclass(frozen=True)
class Plan:
    """A selection resolved against the schema: what to read from each Example and how."""

    split: Split
    vectors: dict[str, Leaf]  # selection key (as the user wrote it) -> leaf; state keys and the action
    views: dict[str, Leaf]
    instruction: Leaf | None
    counter: Leaf  # a key with one value per step, to count the steps on
    size: tuple[int, int] | None
    limit: int
    first: int = 0  # Selection.first


def open_source(path: Path) -> Source:
    folder = version_folder(Path(path))
    if folder is None:
        raise ImportSourceError(
            f"{path}: no {INFO_FILE} here or in a version folder (x.y.z) below; point at a TFDS version folder"
        )
    return Source(folder, read_info(folder), read_schema(folder))


class RldsImporter:
    """RLDS / TFDS datasets (Open X-Embodiment and anything ``tfds build`` wrote as TFRecord)."""

    name = NAME
    reads_ranges = True  # Selection.first: shards wholly before it are not opened, records before it in its shard not read

    def detect(self, path: Path) -> bool:
        folder = version_folder(Path(path))
        if folder is None or not (folder / FEATURES_FILE).is_file():
            return False
        try:
            read_schema(folder)
        except ImportSourceError:
            return False
        return True

    def describe(self, path: Path) -> SourceInfo:
        src = open_source(path)
        split = src.info.split(src.info.default_split(), src.folder)
        instruction = default_instruction(src.schema)
        first = first_episode(src, split)
        text = decode.text(instruction, first) if instruction and first else None
        return SourceInfo(
            format=NAME,
            location=str(path),
            episodes=split.episodes,
            steps=0,  # dataset_info.json counts episodes, not steps
            fps=0.0,  # RLDS does not record the control rate
            features=tuple(_feature(leaf, first) for leaf in src.schema.steps if not leaf.unsupported),
            tasks=(text,) if text else (),
            default_state=default_state(src.schema),
            default_action=default_action(src.schema),
            default_views=default_views(src.schema),
            extra=_extra(src, split, instruction),
        )

    def episodes(self, path: Path, selection: Selection) -> Iterator[SourceEpisode]:
        """Checks the whole selection first (raising for the source's problems), then streams."""
        src = open_source(path)
        plan = plan_for(src, selection)
        shards = src.info.shard_paths(src.folder, plan.split)
        if not any(p.is_file() for p in shards):
            expected = shards[0].name if shards else f"{src.info.name}-{plan.split.name}.tfrecord-*"
            raise ImportSourceError(
                f"{src.folder}: no shard of split {plan.split.name!r} (expected {expected})"
            )
        return _stream(shards, plan)


def default_instruction(schema: Schema) -> Leaf | None:
    """``steps/language_instruction``, else the first text key named like an instruction
    (fractal's ``steps/observation/natural_language_instruction``)."""
    texts = [leaf for leaf in schema.steps if leaf.kind == TEXT and not leaf.unsupported]
    exact = [leaf for leaf in texts if leaf.key == INSTRUCTION_KEY]
    named = sorted(
        (leaf for leaf in texts if "instruction" in leaf.key.rsplit("/", 1)[-1]), key=lambda leaf: leaf.key
    )
    return (exact or named or [None])[0]


def default_state(schema: Schema) -> tuple[str, ...]:
    """``steps/observation/state``, else every numeric observation that is not language or a frame."""
    leaf = schema.find(STATE_KEY)
    if leaf is not None and leaf.kind == VECTOR and not leaf.unsupported:
        return (leaf.key,)
    return tuple(
        sorted(
            leaf.key
            for leaf in schema.steps
            if leaf.key.startswith(OBSERVATION)
            and leaf.kind == VECTOR
            and not leaf.unsupported
            and len(leaf.shape) <= 2  # an (H, W, C) float tensor is a depth map, not state
            and not _language(leaf)
        )
    )


def _language(leaf: Leaf) -> bool:
    name = leaf.key.rsplit("/", 1)[-1]
    return any(word in name for word in ("language", "instruction", "embedding"))


def default_action(schema: Schema) -> str:
    """``steps/action`` when it is one vector; a dict of actions (fractal) leaves the choice to the user."""
    leaf = schema.find(ACTION_KEY)
    return leaf.key if leaf is not None and leaf.kind == VECTOR and not leaf.unsupported else ""


def default_views(schema: Schema) -> tuple[str, ...]:
    """Every RGB camera among the observations (depth and other one-channel images are left out)."""
    return tuple(
        sorted(
            leaf.key
            for leaf in schema.steps
            if leaf.key.startswith(OBSERVATION) and _view_problem(leaf) == "" and leaf.shape[-1] in (3, -1)
        )
    )


def _view_problem(leaf: Leaf) -> str:
    if leaf.kind != IMAGE or leaf.unsupported:
        return leaf.unsupported or f"{leaf.kind} data"
    if leaf.dtype != "uint8":
        return f"{leaf.dtype} pixels (a camera view must be 8-bit)"
    return ""


def first_episode(src: Source, split: Split) -> Mapping[str, Any] | None:
    """The first episode's parsed record, for what the metadata does not say: RLDS keeps the
    instructions in the steps, and TFDS may leave an image's size unknown (-1)."""
    shard = next((p for p in src.info.shard_paths(src.folder, split) if p.is_file()), None)
    if shard is None:
        return None
    try:
        with contextlib.closing(read_frames(shard)) as frames:
            frame = next(frames)
        return decode.parse_example(frame.data) if frame.data is not None else None
    except (StopIteration, OSError, DecodeError):
        return None


def _feature(leaf: Leaf, first: Mapping[str, Any] | None) -> Feature:
    """The leaf as a Feature, an image's unknown dimensions taken from the first frame's header."""
    feature = leaf.feature()
    if leaf.kind != IMAGE or -1 not in leaf.shape or first is None:
        return feature
    shape = decode.frame_shape(leaf, first)
    return dataclasses.replace(feature, shape=shape) if shape else feature


def _extra(src: Source, split: Split, instruction: Leaf | None) -> dict[str, Any]:
    return {
        "tfds_name": src.info.name,
        "version": src.info.version,
        "version_folder": str(src.folder),
        "split": split.name,
        "splits": {name: s.episodes for name, s in src.info.splits.items()},
        "shards": len(split.shard_lengths),
        "instruction_key": instruction.key if instruction else "",
        "tasks_from": "the first episode only (RLDS stores instructions per step)",
        "episode_metadata": [leaf.key for leaf in src.schema.episode],
        "unsupported": {leaf.key: leaf.unsupported for leaf in src.schema.steps if leaf.unsupported},
        "options": dict(OPTIONS),
    }


def plan_for(src: Source, selection: Selection) -> Plan:
    """Resolve and check every selected key; what is wrong here is wrong for every episode."""
    unknown = sorted(set(selection.options) - set(OPTIONS))
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())
        raise ImportSourceError(
            f"{src.folder}: unknown option(s) {', '.join(unknown)}; the rlds options are {known}"
        )
    split = src.info.split(selection.options.get("split") or src.info.default_split(), src.folder)
    vectors = {key: _leaf(src, key, "state or action key") for key in (*selection.state, selection.action)}
    for key, leaf in vectors.items():
        if leaf.kind != VECTOR:
            raise ImportSourceError(
                f"{src.folder}: key {key!r} holds {leaf.kind} data (dtype {leaf.dtype}); state and action keys must hold numbers"
            )
    views = {key: _leaf(src, key, "camera view") for key in selection.views}
    for key, leaf in views.items():
        if _view_problem(leaf):
            raise ImportSourceError(
                f"{src.folder}: key {key!r} cannot be a camera view: {_view_problem(leaf)}"
            )
    chosen = selection.options.get("instruction")
    instruction = _leaf(src, chosen, "instruction key") if chosen else default_instruction(src.schema)
    if instruction is not None and instruction.kind != TEXT:
        raise ImportSourceError(
            f"{src.folder}: instruction key {instruction.key!r} holds {instruction.kind} data, not text"
        )
    counters = [src.schema.find(k) for k in COUNTERS]
    counter = next(
        (c for c in counters if c is not None and not c.unsupported and c.width == 1),
        vectors[selection.action],
    )
    return Plan(split, vectors, views, instruction, counter, selection.image_size, max(selection.episodes, 0), selection.first)


def _leaf(src: Source, key: str, role: str) -> Leaf:
    leaf = src.schema.find(key)
    if leaf is None:
        known = ", ".join(leaf.key for leaf in src.schema.steps) or "none"
        raise ImportSourceError(
            f"{src.folder / FEATURES_FILE}: no step key {key!r} ({role}); the keys it has: {known}"
        )
    if leaf.unsupported:
        raise ImportSourceError(
            f"{src.folder / FEATURES_FILE}: key {leaf.key!r} ({role}) cannot be imported: {leaf.unsupported}"
        )
    return leaf


def _stream(shards: list[Path], plan: Plan) -> Iterator[SourceEpisode]:
    """Episodes ``plan.first`` .. (``plan.limit`` of them). By the shards' declared lengths, shards
    wholly before the range are not opened and the records before it in its first shard are passed
    over unread (``read_frames(start=...)``): a unit of a parallel import decodes its episodes only.
    Without declared lengths the episodes before the range are read and dropped."""
    lengths = plan.split.shard_lengths or (0,) * len(shards)
    index = 0
    for shard, declared in zip(shards, lengths):
        if declared and index + declared <= plan.first:
            index += declared
            continue
        skip = max(0, plan.first - index) if declared else 0
        for episode in _shard_episodes(shard, declared, index, plan, skip):
            index = episode.index + 1
            if episode.index < plan.first:
                continue
            yield episode
            if plan.limit and index >= plan.first + plan.limit:
                return


def _shard_episodes(shard: Path, declared: int, start: int, plan: Plan, skip: int = 0) -> Iterator[SourceEpisode]:
    """A shard's episodes from its record ``skip`` on (those before it unread); a missing or
    truncated shard gives one problem per episode it should hold."""
    if not shard.is_file():
        for i in range(skip, declared):
            yield SourceEpisode(start + i, problem=f"shard {shard.name} is missing (record {i})")
        return
    count, broken = skip, ""
    with contextlib.closing(read_frames(shard, start=skip)) as frames:
        for frame in frames:
            count = frame.index
            if frame.last:  # a frame cut short or a damaged length: nothing after it can be trusted
                if not frame.problem:  # the shard ended before record ``skip``
                    break
                broken = f"shard {shard.name} is {frame.problem}" if frame.problem.startswith("truncated") else (
                    f"shard {shard.name}, {frame.problem}; the rest of the shard cannot be read"
                )
                break
            if frame.data is None:  # this record's data failed its checksum; the next one is intact
                yield SourceEpisode(start + count, problem=f"shard {shard.name}, {frame.problem}")
            else:
                yield _episode(start + count, frame.data, shard, count, plan)
            count += 1
    for i in range(count, max(declared, count + bool(broken))):
        yield SourceEpisode(
            start + i,
            problem=broken or f"shard {shard.name} holds {count} records; dataset_info.json says {declared}",
        )


def _episode(index: int, record: memoryview, shard: Path, position: int, plan: Plan) -> SourceEpisode:
    where = f"(shard {shard.name}, record {position})"
    try:
        features = decode.parse_example(record)
    except DecodeError as exc:
        return SourceEpisode(index, problem=f"not a tf.train.Example {where}: {exc}")
    try:
        steps = decode.step_count(features, plan.counter)
        if steps == 0:
            raise decode.EpisodeProblem(f"has no steps (key {plan.counter.key!r} is empty)")
        arrays: dict[str, np.ndarray] = {
            key: decode.vector(leaf, features, steps).astype(np.float32, copy=False)
            for key, leaf in plan.vectors.items()
        }
        arrays |= {key: decode.frames(leaf, features, steps, plan.size) for key, leaf in plan.views.items()}
    except decode.EpisodeProblem as exc:
        return SourceEpisode(index, problem=f"{exc} {where}")
    instruction = decode.text(plan.instruction, features) if plan.instruction else None
    return SourceEpisode(index, arrays, instruction)
