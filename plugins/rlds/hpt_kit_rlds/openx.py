"""The Open X-Embodiment catalogue (``openx.toml``) and imports that follow its entries.

An entry says, for one TFDS dataset of HPT's pre-training mixture, which keys are the state (in
order, or none), which parts make the action vector and in which order, the cameras, the language
key, the control rate (RLDS metadata has none) and the declared shape of every key it uses, each
fact citing a source. Loading validates the file (unknown keys, duplicate names, weights that are
not positive, a field without a source: errors naming the entry). :class:`OpenXSource` wraps the
``rlds`` importer: it checks the source's ``features.json`` against the entry, presents the
concatenated state and action as the two vectors the kit imports, and carries the entry into the
dataset's notes.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hpt_kit.core.importer import VECTOR, Feature, ImportSourceError, Selection, SourceEpisode, SourceInfo

from hpt_kit_rlds.importer import RldsImporter, open_source
from hpt_kit_rlds.schema import FEATURES_FILE, STEPS

CATALOGUE = Path(__file__).with_name("openx.toml")
STATE_KEY = "openx/state"  # the two vectors an Open-X import presents to the kit
ACTION_KEY = "openx/action"
GCS = "gs://gresearch/robotics/{name}/{version}"
# Fields that must cite a source; the optional ones must when present (or be explained in `unresolved`).
CITED = ("version", "published", "state", "action", "cameras", "language", "control_hz", "features")
CITED_IF_PRESENT = ("episodes", "hub", "paper_weight", "robot")
KEYS = {
    "name", "version", "robot", "embodiment", "hub", "state", "action", "cameras", "language",
    "language_embedding", "control_hz", "episodes", "paper_weight", "features", "why", "unresolved", "cite",
}  # fmt: skip


class CatalogueError(ImportSourceError):
    """A catalogue file that is not valid; the message names the file and the entry."""


@dataclass(frozen=True)
class Entry:
    name: str  # the TFDS name
    version: str
    embodiment: str  # the imported dataset's embodiment name
    state: tuple[str, ...]
    action: tuple[str, ...]
    cameras: tuple[str, ...]
    language: str
    control_hz: float
    features: dict[str, tuple[int, ...]]
    cite: dict[str, str]
    robot: str = ""
    hub: tuple[str, ...] = ()
    language_embedding: str = ""
    episodes: int = 0  # 0: not pinned down (read from dataset_info.json at import)
    paper_weight: float = 0.0  # 0: not pinned down
    why: str = ""
    unresolved: tuple[str, ...] = ()

    @property
    def published(self) -> str:
        return GCS.format(name=self.name, version=self.version)

    def width(self, keys: tuple[str, ...]) -> int:
        return sum(math.prod(self.features[k]) for k in keys)

    @property
    def state_dim(self) -> int:
        return self.width(self.state)

    @property
    def action_dim(self) -> int:
        return self.width(self.action)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["features"] = {k: list(v) for k, v in self.features.items()}
        out["published"] = self.published
        return out


@dataclass(frozen=True)
class Catalogue:
    path: Path
    sources: dict[str, str]
    entries: tuple[Entry, ...]

    def entry(self, name: str) -> Entry:
        """By TFDS name or embodiment name; an unknown one lists the known names."""
        for e in self.entries:
            if name in (e.name, e.embodiment):
                return e
        known = ", ".join(e.name for e in self.entries)
        raise CatalogueError(f"{self.path}: no Open-X entry {name!r}; the catalogue has {known}")


def load_catalogue(path: str | Path = CATALOGUE) -> Catalogue:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{path}: cannot read the catalogue ({exc})") from None
    extra = sorted(set(doc) - {"sources", "dataset"})
    if extra:
        raise CatalogueError(f"{path}: unknown top-level key(s) {', '.join(extra)}; expected [sources] and [[dataset]]")
    sources = dict(doc.get("sources") or {})
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(doc.get("dataset") or []):
        entry = _entry(table, f"{path}: [[dataset]] {i + 1} ({table.get('name', '?')})", sources)
        for name in {entry.name, entry.embodiment}:
            if name in seen:
                raise CatalogueError(f"{path}: [[dataset]] {i + 1} ({entry.name}): name {name!r} already used by entry {seen[name]}")
            seen[name] = i + 1
        entries.append(entry)
    return Catalogue(path, sources, tuple(entries))


def _entry(table: Mapping[str, Any], where: str, sources: Mapping[str, str]) -> Entry:
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise CatalogueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
    missing = [k for k in ("name", "version", "embodiment", "action", "cameras", "language", "control_hz", "features", "cite") if k not in table]
    if missing:
        raise CatalogueError(f"{where}: missing {', '.join(missing)}")
    try:
        entry = Entry(
            name=str(table["name"]),
            version=str(table["version"]),
            embodiment=str(table["embodiment"]),
            state=tuple(str(k) for k in table.get("state", ())),
            action=tuple(str(k) for k in table["action"]),
            cameras=tuple(str(k) for k in table["cameras"]),
            language=str(table["language"]),
            control_hz=float(table["control_hz"]),
            features={str(k): tuple(int(d) for d in v) for k, v in dict(table["features"]).items()},
            cite={str(k): str(v) for k, v in dict(table["cite"]).items()},
            robot=str(table.get("robot", "")),
            hub=tuple(str(h) for h in table.get("hub", ())),
            language_embedding=str(table.get("language_embedding", "")),
            episodes=int(table.get("episodes", 0)),
            paper_weight=float(table.get("paper_weight", 0.0)),
            why=str(table.get("why", "")),
            unresolved=tuple(str(u) for u in table.get("unresolved", ())),
        )
    except (TypeError, ValueError) as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    if "paper_weight" in table and not (math.isfinite(entry.paper_weight) and entry.paper_weight > 0):
        raise CatalogueError(f"{where}: paper_weight must be a number > 0, got {table['paper_weight']!r}")
    if not (entry.control_hz > 0) or entry.episodes < 0:
        raise CatalogueError(f"{where}: control_hz must be > 0 and episodes >= 0")
    if not entry.action:
        raise CatalogueError(f"{where}: action lists no part")
    used = (*entry.state, *entry.action, *entry.cameras, *([entry.language_embedding] if entry.language_embedding else []))
    undeclared = [k for k in used if k not in entry.features]
    if undeclared:
        raise CatalogueError(f"{where}: no declared shape in features for {', '.join(undeclared)}")
    explained = {u.split(":", 1)[0].strip() for u in entry.unresolved}
    present = [k for k in CITED_IF_PRESENT if table.get(k)]
    for field in (*CITED, *present):
        source = entry.cite.get(field)
        if source is None and field not in explained:
            raise CatalogueError(f"{where}: field {field!r} cites no source (cite.{field}) and is not listed under unresolved")
        if source is not None and source not in sources:
            raise CatalogueError(f"{where}: cite.{field} = {source!r} is not one of [sources] ({', '.join(sources)})")
    return entry


def check_source(entry: Entry, folder: Path) -> None:
    """The source's ``features.json`` against the entry: every key the entry uses, with its shape."""
    src = open_source(folder)
    where = src.folder / FEATURES_FILE
    if src.info.name != entry.name:
        raise ImportSourceError(f"{src.folder}: dataset_info.json names {src.info.name!r}, the Open-X entry {entry.name!r}")
    problems = []
    for key, expected in entry.features.items():
        leaf = src.schema.find(key)
        if leaf is None:
            problems.append(f"key {key!r} is missing (the catalogue declares shape {list(expected)})")
        elif tuple(leaf.shape) != tuple(expected):
            problems.append(f"key {key!r} has shape {list(leaf.shape)}, the catalogue declares {list(expected)}")
    if problems:
        raise ImportSourceError(f"{where}: does not match Open-X entry {entry.name} {entry.version}: {'; '.join(problems)}")


class OpenXSource:
    """The ``rlds`` importer seen through a catalogue entry: the entry's state parts and action parts
    each concatenated into one vector (``openx/state``, ``openx/action``), its cameras as the views,
    its control rate as the source's, the entry itself in ``extra["openx"]`` (and so in the notes)."""

    def __init__(self, entry: Entry, rlds: RldsImporter | None = None):
        self.entry = entry
        self.rlds = rlds or RldsImporter()
        self.name = f"openx:{entry.name}"

    def detect(self, path: Path) -> bool:
        return self.rlds.detect(path)

    def describe(self, path: Path) -> SourceInfo:
        entry = self.entry
        check_source(entry, Path(path))
        info = self.rlds.describe(path)
        vectors = (
            Feature(STATE_KEY, VECTOR, (entry.state_dim,), "float32", description=" + ".join(entry.state)),
            Feature(ACTION_KEY, VECTOR, (entry.action_dim,), "float32", description=" + ".join(entry.action)),
        )
        return dataclasses.replace(
            info,
            format="openx",
            fps=entry.control_hz,
            robot=entry.robot,
            features=(*vectors, *info.features),
            default_state=(STATE_KEY,),
            default_action=ACTION_KEY,
            default_views=tuple(f"{STEPS}/{k}" for k in entry.cameras),
            extra={**info.extra, "openx": entry.as_dict()},
        )

    def episodes(self, path: Path, selection: Selection) -> Iterator[SourceEpisode]:
        entry = self.entry
        parts = (*entry.state, *entry.action)
        inner = Selection(
            state=parts,
            action=entry.action[0],
            views=selection.views,
            episodes=selection.episodes,
            image_size=selection.image_size,
            options={"instruction": entry.language, **selection.options},
        )
        for ep in self.rlds.episodes(path, inner):
            if ep.problem:
                yield ep
                continue
            arrays = {k: v for k, v in ep.arrays.items() if k not in parts}
            arrays[ACTION_KEY] = _concat(ep, entry.action)
            arrays[STATE_KEY] = _concat(ep, entry.state, len(arrays[ACTION_KEY]))
            yield SourceEpisode(ep.index, arrays, ep.instruction)


def _concat(ep: SourceEpisode, keys: tuple[str, ...], steps: int = 0) -> np.ndarray:
    """The keys' values side by side, (T, width); no keys (a dataset without state): (steps, 0)."""
    columns = [np.asarray(ep.arrays[k], dtype=np.float32).reshape(len(ep.arrays[k]), -1) for k in keys]
    return np.concatenate(columns, axis=1) if columns else np.zeros((steps, 0), dtype=np.float32)


def imported_path(entry: Entry, root: Path) -> Path:
    """Where ``openx import`` puts the entry's dataset under the data root."""
    return Path(root) / f"{entry.embodiment}.zarr"


def tokens_per_sample(entry: Entry, language: bool = True) -> int:
    """The trunk tokens of one sample of the entry's imported dataset, with the stems an import gives
    it (state, one image stem over its cameras, language when instructions are encoded), at their
    default sizes."""
    from hpt_kit.core.spec import IMAGE, LANGUAGE, STATE, StemSpec

    tokens = StemSpec(STATE).num_tokens if entry.state else 0
    tokens += StemSpec(IMAGE, kind="resnet").num_tokens * len(entry.cameras)
    return tokens + (StemSpec(LANGUAGE).num_tokens if language else 0)
