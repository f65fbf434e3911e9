"""Importing a dataset in another format (through an importer plugin) into a kit dataset.

The importer reads its format; everything else happens here, once for every format: the keys are
checked against what the source holds, state keys are concatenated in the order given, frames are
brought to one size, instructions become language through a text encoder, every episode is
validated (a bad one stops the import naming it, or is skipped and noted with ``skip_bad``), and the
dataset is written atomically with a spec inferred from the source: an *imported embodiment*,
data-only (no simulator behind it). The notes record the source, the format and what was skipped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.core.importer import IMAGE as IMAGE_KIND
from hpt_kit.core.importer import (
    VECTOR,
    Feature,
    Importer,
    ImportSourceError,
    Selection,
    SourceEpisode,
    SourceInfo,
)
from hpt_kit.core.spec import (
    ACTION,
    IMAGE,
    INSTRUCTION,
    LANGUAGE,
    NAME_PATTERN,
    STATE,
    ActionSpec,
    EmbodimentData,
    Episode,
    HeadSpec,
    ImageSpec,
    LanguageSpec,
    ObservationSpec,
    StemSpec,
)
from hpt_kit.data.convert import default_dataset_path
from hpt_kit.data.store import write_dataset
from hpt_kit.images import FITS, fit_frames

IMPORT_NOTE = "import"  # the notes key that marks an imported dataset (format, source, keys)
MIN_STEPS = 2  # shorter episodes are dropped or refused: nothing to learn from one step
DEFAULT_HZ = 10.0  # control rate when the source does not say


@dataclass(frozen=True)
class ImportOptions:
    """The user's choices; ``None`` takes the importer's defaults (see ``describe``)."""

    name: str | None = None
    state: tuple[str, ...] | None = None
    action: str | None = None
    views: tuple[str, ...] | None = None
    episodes: int = 0  # the first N; 0: all
    # Frames scaled to N x N; 0: as stored, or where views differ in size, the smallest view's size
    # (hpt_kit.images.fit_frames; image_fit says how a frame of another shape fits: pad, crop or stretch).
    image_size: int = 0
    image_fit: str = "pad"
    options: Mapping[str, str] = field(default_factory=dict)  # importer-specific (filter_key, split)
    skip_bad: bool = False  # skip an unreadable or invalid episode (noted) instead of stopping
    text_encoder: str = "hash-ngram"  # encodes instructions; "none" drops language
    image_encoder: str | None = None  # also store frozen ResNet features, as `convert --image-encoder`
    image_encoder_weights: str | None = "imagenet"
    image_encoder_resize: int = 0
    first: int = 0  # start at this episode of the selection: a unit of a parallel import (importers with reads_ranges)


def resolve_source(location: str) -> Path:
    """A local folder or file, or ``hf://datasets/OWNER/NAME[@REVISION]`` (downloaded or cached)."""
    from hpt_kit.weights.locations import resolve_dataset_location

    return resolve_dataset_location(location)


def default_name(info: SourceInfo) -> str:
    """An embodiment name from the source's folder or file name (lowercase, '-' separated)."""
    where = Path(info.location.rstrip("/").split("@")[0])
    stem = where.parent.name if re.fullmatch(r"v?\d+(\.\d+)*", where.name) else where.name  # a version folder
    stem = re.sub(r"\.(hdf5|h5)$", "", stem)
    words = re.findall(r"[a-z0-9]+", stem.lower())
    name = "-".join(words) or info.format
    return name if name[0].isalpha() else f"{info.format}-{name}"


def selection_for(info: SourceInfo, opts: ImportOptions) -> Selection:
    """The keys to read: the user's, else the importer's defaults; each checked against the source.
    No state key (``opts.state == ()``, or none chosen and none by default) imports a state-free spec."""
    state = [info.feature(k).key for k in opts.state] if opts.state is not None else info.default_state
    action = info.feature(opts.action).key if opts.action else info.default_action
    views = [info.feature(k).key for k in opts.views] if opts.views is not None else info.default_views
    if not action:
        raise ImportSourceError(f"{info.location}: no action key chosen and none by default; pass --action KEY")
    for key in (*state, action):
        _check_kind(info, info.feature(key), VECTOR)
    for key in views:
        _check_kind(info, info.feature(key), IMAGE_KIND)
    size = (opts.image_size, opts.image_size) if opts.image_size else None
    return Selection(tuple(state), action, tuple(views), opts.episodes, size, dict(opts.options), first=opts.first)


def _check_kind(info: SourceInfo, feature: Feature, kind: str) -> None:
    if feature.kind != kind:
        raise ImportSourceError(
            f"{info.location}: key {feature.key!r} holds {feature.kind} data ({feature.dtype}, shape {feature.shape}); "
            f"a {'state or action key' if kind == VECTOR else 'camera view'} must be {kind} data"
        )
    if kind == VECTOR and not re.match(r"^(float|int|uint|bool|bfloat)", feature.dtype):
        raise ImportSourceError(
            f"{info.location}: key {feature.key!r} has dtype {feature.dtype}, which is not numeric; "
            "state and action keys must hold numbers"
        )


def infer_spec(info: SourceInfo, selection: Selection, name: str, language: LanguageSpec | None) -> EmbodimentData:
    """The imported embodiment's spec. Action bounds and the longest episode are placeholders here;
    :func:`finish_spec` sets them from the whole data."""
    state_dim = sum(_width(info.feature(k)) for k in selection.state)
    action_dim = _width(info.feature(selection.action))
    image = None
    if selection.views:
        height, width = selection.image_size or _common_size(info, selection.views)
        image = ImageSpec(tuple(_view_name(k) for k in selection.views), height, width)
    stems = [StemSpec(STATE)] if state_dim else []  # a source without state: image/language stems only
    if image is not None:  # random ResNet weights: nothing downloaded unless stem_options ask for "imagenet"
        stems.append(StemSpec(IMAGE, kind="resnet", options={"weights": "none"}))
    if language is not None:
        stems.append(StemSpec(LANGUAGE))
    return EmbodimentData(
        name=name,
        observation=ObservationSpec(state_dim, image=image, language=language, state_names=value_names(info, selection.state)),
        action=ActionSpec(action_dim, (-1.0,) * action_dim, (1.0,) * action_dim, float(info.fps or DEFAULT_HZ),
                          names=value_names(info, (selection.action,))),
        stems=tuple(stems),
        head=HeadSpec(),
        description=f"imported from {info.format} {info.location}",
    )


def finish_spec(spec: EmbodimentData, stats: Mapping[str, Any], lengths: np.ndarray) -> EmbodimentData:
    """Action bounds from the data (a constant dimension gets +-1 around its value) and the longest
    episode as ``max_episode_steps``."""
    low = np.asarray(stats["action"]["min"], dtype=np.float64)
    high = np.asarray(stats["action"]["max"], dtype=np.float64)
    flat = high <= low
    low, high = np.where(flat, low - 1.0, low), np.where(flat, high + 1.0, high)
    action = dataclasses.replace(spec.action, low=tuple(low.tolist()), high=tuple(high.tolist()))
    return dataclasses.replace(spec, action=action, max_episode_steps=int(lengths.max()))


def value_names(info: SourceInfo, keys: Sequence[str]) -> tuple[str, ...]:
    """A name per value of the keys concatenated: the source's own per-value names (LeRobot's
    ``names``), else the key's short name (robomimic's and RLDS's keys), indexed ``key[i]`` when it
    holds more than one value."""
    out: list[str] = []
    for key in keys:
        feature = info.feature(key)
        width = _width(feature)
        short = _view_name(key)
        out += feature.names if len(feature.names) == width else [short] if width == 1 else [f"{short}[{i}]" for i in range(width)]
    return tuple(out)


def _width(feature: Feature) -> int:
    return int(np.prod(feature.shape)) if feature.shape else 1


def _view_name(key: str) -> str:
    """A camera's short name: the last part of its key ("observation.images.top" -> "top")."""
    return re.split(r"[./]", key)[-1]


def _common_size(info: SourceInfo, views: Sequence[str]) -> tuple[int, int]:
    """The views' one frame size, or where they differ, the smallest view's (by pixel count): the
    others are fitted into it (``ImportOptions.image_fit``), never enlarged past their own detail."""
    sizes = [tuple(info.feature(k).shape[:2]) for k in views]
    return min(sizes, key=lambda s: (s[0] * s[1], s))


def frame_sizes(info: SourceInfo, selection: Selection, spec: EmbodimentData, fit: str) -> dict[str, Any]:
    """How each view's frames are brought to the stored size, for the notes and the command's report."""
    image = spec.observation.image
    source = {_view_name(k): list(info.feature(k).shape[:2]) for k in selection.views}
    return {"height": image.height, "width": image.width, "fit": fit, "method": "hpt_kit.images.fit_frames", "source": source}


class EverySkipped(ImportSourceError):
    """``--skip-bad`` skipped every episode of the selection; ``skipped``: the notes' entries for them."""

    def __init__(self, message: str, skipped: list[dict[str, Any]]):
        super().__init__(message)
        self.skipped = skipped


def kit_episodes(
    source: Iterator[SourceEpisode], info: SourceInfo, selection: Selection, spec: EmbodimentData, opts: ImportOptions, notes: dict
) -> Iterator[Episode]:
    """The importer's episodes as kit episodes; a bad one raises naming it, or is skipped and noted."""
    skipped: list[dict[str, Any]] = notes.setdefault("skipped_episodes", [])
    kept = 0
    for ep in source:
        try:
            episode = _kit_episode(ep, selection, spec, opts.image_fit)
        except ImportSourceError as exc:
            if not opts.skip_bad:
                raise ImportSourceError(f"{info.location}: {exc} (pass --skip-bad to skip such episodes)") from None
            skipped.append({"episode": ep.index, "reason": str(exc)})
            continue
        kept += 1
        yield episode
    if not kept and skipped:  # nothing to write: say why, from the first episode
        raise EverySkipped(
            f"{info.location}: --skip-bad skipped every episode ({len(skipped)}); the first, {skipped[0]['reason']}", skipped
        )


def _kit_episode(ep: SourceEpisode, selection: Selection, spec: EmbodimentData, fit: str = "pad") -> Episode:
    where = f"episode {ep.index}"
    if ep.problem:
        raise ImportSourceError(f"{where}: {ep.problem}")
    missing = [k for k in (*selection.state, selection.action, *selection.views) if k not in ep.arrays]
    if missing:
        raise ImportSourceError(f"{where}: the importer gave no {', '.join(missing)}")
    vectors = {k: _vector(ep, k) for k in (*selection.state, selection.action)}
    lengths = {k: len(v) for k, v in vectors.items()} | {k: len(ep.arrays[k]) for k in selection.views}
    if len(set(lengths.values())) != 1:
        raise ImportSourceError(f"{where}: keys have different step counts {lengths}")
    steps = lengths[selection.action]
    if steps < MIN_STEPS:
        raise ImportSourceError(f"{where}: has {steps} step(s); at least {MIN_STEPS} are needed")
    action = vectors[selection.action]
    state = np.concatenate([vectors[k] for k in selection.state], axis=1) if selection.state else np.zeros((steps, 0), np.float32)
    if state.shape[1] != spec.observation.state_dim or action.shape[1] != spec.action.dim:
        raise ImportSourceError(
            f"{where}: {state.shape[1]} state and {action.shape[1]} action values per step; the source declares "
            f"{spec.observation.state_dim} and {spec.action.dim} (variable-length vectors are not supported)"
        )
    for key, arr in vectors.items():
        bad = np.argwhere(~np.isfinite(arr))
        if len(bad):
            raise ImportSourceError(f"{where}, key {key!r}: non-finite value {arr[tuple(bad[0])]} at step {int(bad[0][0])}")
    out: Episode = {STATE: state, ACTION: action}
    if selection.views:
        image = spec.observation.image
        out[IMAGE] = np.stack([_frames(ep, k, image.height, image.width, fit) for k in selection.views], axis=1)
    if spec.observation.language is not None:
        out[INSTRUCTION] = ep.instruction or ""
    return out


def _vector(ep: SourceEpisode, key: str) -> np.ndarray:
    arr = np.asarray(ep.arrays[key])
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ImportSourceError(f"episode {ep.index}, key {key!r}: dtype {arr.dtype} is not numeric")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        arr = arr.reshape(len(arr), -1)
    return arr.astype(np.float32, copy=False)


def _frames(ep: SourceEpisode, key: str, height: int, width: int, fit: str = "pad") -> np.ndarray:
    frames = np.asarray(ep.arrays[key])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ImportSourceError(
            f"episode {ep.index}, view {key!r}: frames of shape {frames.shape} and dtype {frames.dtype}; expected (T, H, W, 3) uint8"
        )
    return fit_frames(frames, height, width, fit)  # the one resize a robot repeats on its camera frames


def import_dataset(
    importer: Importer,
    location: str,
    out: str | Path | None = None,
    opts: ImportOptions = ImportOptions(),
    registry: Any = None,
    overwrite: bool = False,
    on_episode: Callable[[int, int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Path:
    """Import the source at ``location`` (a path or ``hf://datasets/...``) into a dataset at ``out``
    (default ``$HPT_KIT_DATA/NAME.zarr``). Nothing is left behind if it fails. ``on_start(episodes)``
    and ``on_episode(i, steps)`` report progress."""
    path = resolve_source(location)
    info = dataclasses.replace(importer.describe(path), location=location)
    selection = selection_for(info, opts)
    if opts.image_fit not in FITS:
        raise ImportSourceError(f"--image-fit {opts.image_fit!r}: choose one of {', '.join(FITS)}")
    name = opts.name or default_name(info)
    if not NAME_PATTERN.match(name):
        raise ImportSourceError(f"--name {name!r} must be lowercase letters, digits, '-' or '_', starting with a letter")
    language, instructions = _language(info, opts, registry)
    if not selection.state and not selection.views and language is None:
        raise ImportSourceError(
            f"{info.location}: no state key, no camera view and no instruction: the policy would observe nothing; "
            f"pass --state KEY or --view KEY{' (or drop --text-encoder none)' if info.tasks else ''}"
        )
    spec = infer_spec(info, selection, name, language)
    notes: dict[str, Any] = {IMPORT_NOTE: _import_note(info, selection, opts)}
    if spec.observation.image is not None:
        notes[IMPORT_NOTE]["frames"] = frame_sizes(info, selection, spec, opts.image_fit)
    if on_start is not None:
        on_start(min(opts.episodes, info.episodes) if opts.episodes else info.episodes)
    # Frames come as stored; the kit scales them (fit_frames), so a robot can repeat it exactly.
    as_stored = dataclasses.replace(selection, image_size=None)
    stream: Iterator[Episode] = kit_episodes(importer.episodes(path, as_stored), info, selection, spec, opts, notes)
    if instructions is not None:
        from hpt_kit.core.language import with_language

        stream = with_language(name, stream, instructions, notes)
    stored: EmbodimentData = spec
    if opts.image_encoder:
        from hpt_kit.data.convert import image_features

        stored, stream = image_features(spec, stream, opts.image_encoder, opts.image_encoder_weights, opts.image_encoder_resize)
    target = Path(out) if out is not None else default_dataset_path(name)

    def final(stats: Mapping[str, Any], lengths: np.ndarray) -> EmbodimentData:
        return finish_spec(stored, stats, lengths)

    return write_dataset(target, stored, stream, notes=notes, overwrite=overwrite, on_episode=on_episode, final_spec=final)


def _language(info: SourceInfo, opts: ImportOptions, registry: Any) -> tuple[LanguageSpec | None, Any]:
    """Instructions become language when the source has tasks and an encoder is chosen."""
    if not info.tasks or opts.text_encoder == "none":
        return None, None
    from hpt_kit.core.language import instructions_for

    if registry is None:
        from hpt_kit.core.registry import load_registry

        registry = load_registry(embodiments=False)
    dim = registry.text_encoder(opts.text_encoder).dim
    language = LanguageSpec(tokens=1, channels=dim, encoder=opts.text_encoder)
    return language, instructions_for(language, registry)


def _import_note(info: SourceInfo, selection: Selection, opts: ImportOptions) -> dict[str, Any]:
    return {
        "format": info.format,
        "source": info.location,
        "robot": info.robot,
        "fps": info.fps,
        "state_keys": list(selection.state),
        "action_key": selection.action,
        "views": list(selection.views),
        "options": dict(selection.options),
        "source_episodes": info.episodes,
        "extra": dict(info.extra),
    }


def is_imported(notes: Mapping[str, Any]) -> bool:
    """Whether a dataset's notes mark it as imported (data-only, no simulator)."""
    return isinstance(notes.get(IMPORT_NOTE), Mapping)


def imported_datasets(root: Path | None = None) -> list[Any]:
    """The imported datasets in ``root`` (default: the dataset root), as opened ``Dataset``s; folders
    that are not datasets are passed over."""
    from hpt_kit.data.convert import dataset_root
    from hpt_kit.data.store import Dataset, DatasetError

    root = Path(root) if root is not None else dataset_root()
    found = []
    for path in sorted(root.glob("*.zarr")) if root.is_dir() else []:
        try:
            ds = Dataset(path)
        except DatasetError:
            continue
        if is_imported(ds.notes):
            found.append(ds)
    return found
