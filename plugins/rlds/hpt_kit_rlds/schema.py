"""What an RLDS dataset's TFDS metadata says: the per-step features (``features.json``) and the
splits with their shards (``dataset_info.json``).

TFDS writes a prepared dataset as a version folder (``<data_dir>/<name>/<version>/``) holding these
two JSON documents next to the shards ``<name>-<split>.tfrecord-00000-of-00016``. ``features.json``
is the ``FeatureConnector.to_json`` form of a ``FeaturesDict``: RLDS puts the steps under ``steps``
(a ``Dataset`` feature, i.e. a sequence) and per-episode values under ``episode_metadata``. Each
episode is one ``tf.train.Example`` whose keys are the feature paths joined with ``/``
(``steps/observation/image``), every per-step value of an episode concatenated into one list.
Only the JSON is read here; nothing TensorFlow is imported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hpt_kit.core.importer import IMAGE, TEXT, VECTOR, Feature, ImportSourceError

INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
STEPS = "steps"
EPISODE_METADATA = "episode_metadata"
DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"  # TFDS's naming.DEFAULT_FILENAME_TEMPLATE
SHARD_DIGITS = 5  # TFDS pads shard numbers to at least five digits

NUMERIC = {
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64",
}  # fmt: skip
STRING = {"string", "str", "object"}
TENSOR_ENCODINGS = {"none", "bytes", "zlib"}  # tfds.features.Encoding


@dataclass(frozen=True)
class Leaf:
    """One stored feature: where it is in the Example and how its values are laid out."""

    key: str  # the flattened path as TFDS writes it: "steps/observation/state"
    kind: str  # VECTOR, IMAGE or TEXT
    shape: tuple[int, ...]  # per step as declared; -1 where TFDS has None
    dtype: str  # declared numpy dtype: "float32", "bool", "uint8" (an image's pixels), "string"
    encoding: str  # a tensor's "none" / "bytes" / "zlib"; an Image's "jpeg" / "png" / "" (either)
    image: bool = False  # a tfds Image (one encoded file per step), not a raw uint8 tensor
    description: str = ""
    unsupported: str = ""  # why it cannot be imported, or ""

    @property
    def width(self) -> int:
        """Values per step (a scalar counts one)."""
        return int(np.prod(self.shape)) if self.shape else 1

    def feature(self) -> Feature:
        """The kit's view of it: vectors flattened per step, images as (H, W, C)."""
        if self.kind == IMAGE:
            stored = (self.encoding or "image") if self.image else self.dtype
            if self.image and self.dtype != "uint8":
                stored = f"{stored}/{self.dtype}"
            return Feature(self.key, IMAGE, self.shape, stored, description=self.description)
        if self.kind == TEXT:
            return Feature(self.key, TEXT, (), "string", description=self.description)
        return Feature(self.key, VECTOR, (self.width,), self.dtype, description=self.description)


@dataclass(frozen=True)
class Schema:
    """The per-step leaves and the per-episode ones of ``features.json``."""

    steps: tuple[Leaf, ...]
    episode: tuple[Leaf, ...]

    def find(self, key: str) -> Leaf | None:
        """The leaf named ``key``, also in the short form without ``steps/`` (``observation/state``)."""
        by_key = {leaf.key: leaf for leaf in self.steps}
        return by_key.get(key) or by_key.get(f"{STEPS}/{key}")


@dataclass(frozen=True)
class Split:
    name: str
    shard_lengths: tuple[int, ...]  # episodes per shard; () when dataset_info.json does not list them
    episodes: int
    template: str


@dataclass(frozen=True)
class DatasetInfo:
    """The parts of ``dataset_info.json`` an import needs."""

    name: str
    version: str
    file_format: str
    description: str
    splits: dict[str, Split]

    def split(self, name: str, where: Path) -> Split:
        if name not in self.splits:
            known = ", ".join(self.splits) or "none"
            raise ImportSourceError(f"{where / INFO_FILE}: no split {name!r}; the splits it has: {known}")
        return self.splits[name]

    def default_split(self) -> str:
        """``train`` as TFDS builders name it, else the first split listed."""
        return "train" if "train" in self.splits or not self.splits else next(iter(self.splits))

    def shard_paths(self, folder: Path, split: Split) -> list[Path]:
        """The split's shard files in order, named by its template (those listed, present or not)."""
        if not split.shard_lengths:  # an older dataset_info.json: take the files that are there
            return sorted(folder.glob(f"{self.name}-{split.name}.{self.file_format}-*"))
        count = len(split.shard_lengths)
        digits = max(len(str(count)), SHARD_DIGITS)
        names = []
        for index in range(count):
            fields = {
                "DATASET": self.name,
                "SPLIT": split.name,
                "FILEFORMAT": self.file_format,
                "SHARD_INDEX": f"{index:0{digits}d}",
                "NUM_SHARDS": f"{count:0{digits}d}",
                "SHARD_X_OF_Y": f"{index:0{digits}d}-of-{count:0{digits}d}",
            }
            names.append(_fill(split.template, fields))
        return [folder / name for name in names]


def _fill(template: str, fields: Mapping[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m.group(1), m.group(0)), template)


def version_folder(path: Path) -> Path | None:
    """The TFDS version folder at or under ``path``: the folder itself, the folder of a metadata file,
    or the newest ``x.y.z`` folder inside a dataset folder; None when there is none."""
    path = Path(path)
    if path.is_file() and path.name in (INFO_FILE, FEATURES_FILE):
        path = path.parent
    if (path / INFO_FILE).is_file():
        return path
    if not path.is_dir():
        return None
    versions = [
        p for p in path.iterdir() if re.fullmatch(r"\d+\.\d+\.\d+", p.name) and (p / INFO_FILE).is_file()
    ]
    if not versions:
        return None
    return max(versions, key=lambda p: tuple(int(n) for n in p.name.split(".")))


def read_info(folder: Path) -> DatasetInfo:
    doc = _load_json(folder / INFO_FILE)
    where = folder / INFO_FILE
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ImportSourceError(f"{where}: no dataset 'name'; TFDS names the shards after it")
    file_format = str(doc.get("fileFormat") or "tfrecord")
    if file_format != "tfrecord":
        raise ImportSourceError(
            f"{where}: fileFormat {file_format!r} is not supported; only TFRecord shards are read"
        )
    splits: dict[str, Split] = {}
    for entry in doc.get("splits") or []:
        split = _split(entry, where)
        splits[split.name] = split
    if not splits:
        raise ImportSourceError(f"{where}: lists no splits")
    return DatasetInfo(
        name, str(doc.get("version", "")), file_format, str(doc.get("description", "")), splits
    )


def _split(entry: Any, where: Path) -> Split:
    try:
        name = str(entry["name"])
        lengths = tuple(int(n) for n in entry.get("shardLengths") or ())
        stats = entry.get("statistics") or {}
        episodes = sum(lengths) if lengths else int(stats.get("numExamples") or entry.get("numExamples") or 0)
        template = str(entry.get("filepathTemplate") or DEFAULT_TEMPLATE)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ImportSourceError(f"{where}: a malformed split entry {entry!r} ({exc})") from None
    return Split(name, lengths, episodes, template)


def read_schema(folder: Path) -> Schema:
    where = folder / FEATURES_FILE
    doc = _load_json(where)
    if "featuresDict" not in doc:
        hint = " (the pre-2021 'type'/'content' form)" if "content" in doc else ""
        raise ImportSourceError(f"{where}: not a TFDS FeaturesDict description{hint}")
    top = _children(doc)
    steps = top.get(STEPS)
    if not isinstance(steps, Mapping) or not isinstance(steps.get("sequence"), Mapping):
        raise ImportSourceError(f"{where}: no '{STEPS}' sequence feature, so not an RLDS dataset")
    step_leaves = tuple(_leaves(steps["sequence"].get("feature", {}), STEPS))
    meta = top.get(EPISODE_METADATA)
    episode_leaves = tuple(_leaves(meta, EPISODE_METADATA)) if isinstance(meta, Mapping) else ()
    return Schema(step_leaves, episode_leaves)


def _load_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportSourceError(
            f"{path}: missing; a TFDS version folder holds {INFO_FILE} and {FEATURES_FILE}"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportSourceError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ImportSourceError(f"{path}: expected a JSON object")
    return doc


def _children(node: Mapping) -> Mapping[str, Any]:
    return (node.get("featuresDict") or {}).get("features") or {}


def _leaves(node: Mapping, key: str) -> Iterator[Leaf]:
    """Depth first, in features.json's order; nested dicts join their names with ``/`` as TFDS does."""
    doc = str(node.get("description", ""))
    if "featuresDict" in node:
        for name, child in _children(node).items():
            yield from _leaves(child, f"{key}/{name}")
    elif "tensor" in node:
        yield _tensor(key, node["tensor"], doc)
    elif "image" in node:
        spec = node["image"]
        dtype = str(spec.get("dtype", "uint8"))
        shape = _shape(spec)
        yield Leaf(
            key,
            IMAGE,
            shape,
            dtype,
            str(spec.get("encodingFormat", "")),
            True,
            doc,
            _image_problem(shape, dtype),
        )
    elif "text" in node:
        yield Leaf(key, TEXT, (), "string", "none", description=doc)
    elif "classLabel" in node:
        yield Leaf(key, VECTOR, (), "int64", "none", description=doc)
    elif "sequence" in node:
        yield Leaf(
            key,
            VECTOR,
            (-1,),
            "sequence",
            "none",
            description=doc,
            unsupported="a sequence inside each step (ragged)",
        )
    else:
        kind = str(node.get("pythonClassName", "unnamed")).rsplit(".", 1)[-1]
        yield Leaf(key, VECTOR, (), kind, "none", description=doc, unsupported=f"a TFDS {kind} feature")


def _tensor(key: str, spec: Mapping, doc: str) -> Leaf:
    dtype = str(spec.get("dtype", ""))
    shape = _shape(spec)
    encoding = str(spec.get("encoding") or "none").lower()
    if dtype in STRING:
        problem = "" if shape == () else f"a string tensor of shape {shape}"
        return Leaf(key, TEXT, (), "string", encoding, description=doc, unsupported=problem)
    kind = IMAGE if len(shape) == 3 and dtype == "uint8" and shape[-1] in (1, 3) else VECTOR
    problem = ""
    if dtype not in NUMERIC:
        problem = f"dtype {dtype!r}"
    elif encoding not in TENSOR_ENCODINGS:
        problem = f"tensor encoding {encoding!r}"
    elif -1 in shape:
        problem = f"a per-step shape with unknown dimensions {shape}"
    return Leaf(key, kind, shape, dtype, encoding, description=doc, unsupported=problem)


def _shape(spec: Mapping) -> tuple[int, ...]:
    dims = (spec.get("shape") or {}).get("dimensions") or []
    return tuple(int(d) for d in dims)


def _image_problem(shape: tuple[int, ...], dtype: str) -> str:
    if len(shape) != 3:
        return f"an image of shape {shape}"
    if dtype not in ("uint8", "uint16"):
        return f"images of dtype {dtype}"
    return ""
