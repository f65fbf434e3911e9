"""The robomimic importer: robomimic / robosuite HDF5 demonstration files, read with h5py.

Frames are imported as stored. robosuite renders upside down (OpenGL's origin is the bottom row);
robomimic's robosuite wrapper turns every frame over (``[::-1]``) before it writes a dataset or hands
an observation to a policy, while other writers (LIBERO's) keep frames as rendered. Flipping here
would make an imported dataset disagree with every policy trained on the original file; a rollout in
robosuite (:mod:`hpt_kit_robomimic.robosuite_env`) turns its frames over as robomimic does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
from hpt_kit.core.importer import IMAGE, VECTOR, ImportSourceError, Selection, SourceEpisode, SourceInfo
from PIL import Image

from hpt_kit_robomimic import layout

if TYPE_CHECKING:
    from hpt_kit import Embodiment
    from hpt_kit.core.spec import EmbodimentData

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float


@dataclass(frozen=True)
class Column:
    """One selected key: the name the user gave, its path inside a demo and its per-step shape."""

    key: str
    path: str
    kind: str
    step: tuple[int, ...]


class RobomimicImporter:
    name = "robomimic"
    reads_ranges = True  # Selection.first: demos before it are not read

    def detect(self, path: Path) -> bool:
        """An HDF5 file whose ``data`` group has robomimic's ``env_args`` or ``demo_N`` groups."""
        path = Path(path)
        if not path.is_file() or not h5py.is_hdf5(path):
            return False
        try:
            with h5py.File(path, "r") as f:
                data = f.get(layout.DATA)
                if not isinstance(data, h5py.Group):
                    return False
                return "env_args" in data.attrs or any(n.startswith("demo_") for n in data)
        except OSError:
            return False

    def describe(self, path: Path) -> SourceInfo:
        """Keys, shapes and dtypes from the first demo; counts, rate and robot from the metadata."""
        location = str(path)
        with _open(path) as f:
            data = layout.data_group(f, location)
            env = layout.env_args(data, location)
            demos = layout.demo_names(data)
            if not demos:
                raise ImportSourceError(f"{location}: data/ holds no demonstrations")
            feats = layout.features(data[demos[0]])
            state, action, views = layout.default_keys(feats)
            masks = layout.filter_keys(f)
            total = int(data.attrs["total"]) if "total" in data.attrs else _sum_samples(data, demos)
            lang = layout.language(data.attrs, env, env.get("env_kwargs", {}))
            extra = {
                "env_args": env,
                "env_name": env.get("env_name", ""),
                "env_type": env.get("type"),
                "filter_keys": {name: len(listed) for name, listed in masks.items()},
                "demos": f"{demos[0]} .. {demos[-1]}",
            }
            if views:
                extra["images"] = "imported as stored (robosuite renders upside down); not flipped"
            robosuite = layout.robosuite_facts(env)
            if robosuite:
                extra["robosuite"] = robosuite
            return SourceInfo(
                format=self.name,
                location=location,
                episodes=len(demos),
                steps=total,
                fps=float(env.get("env_kwargs", {}).get("control_freq", 0) or 0),
                features=feats,
                tasks=(lang,) if lang else (),
                default_state=state,
                default_action=action,
                default_views=views,
                robot=",".join(layout.robots(env)),
                extra=extra,
            )

    def episodes(self, path: Path, selection: Selection) -> Iterator[SourceEpisode]:
        """Each selected demo in numeric order, read whole (one demo in memory at a time)."""
        location = str(path)
        with _open(path) as f:
            data = layout.data_group(f, location)
            env = layout.env_args(data, location)
            demos = layout.demo_names(data)
            chosen = layout.select_demos(f, demos, selection.options, location)
            end = selection.first + selection.episodes if selection.episodes > 0 else None
            chosen = chosen[selection.first : end]
            if not demos:
                return
            columns = _columns(data[demos[0]], selection, location)
            shared = layout.language(data.attrs, env, env.get("env_kwargs", {}))
            for index, name in enumerate(chosen, start=selection.first):
                demo = data.get(name)
                if not isinstance(demo, h5py.Group):
                    key = selection.options["filter_key"]
                    yield SourceEpisode(index, problem=f"mask/{key} lists {name}, which data/ lacks")
                    continue
                yield _read_demo(index, demo, columns, selection.image_size, shared)

    def environment(self, spec: EmbodimentData, note: Mapping[str, Any]) -> Embodiment:
        """The robosuite environment ``env_args`` names, for a dataset this importer made (see
        :mod:`hpt_kit_robomimic.robosuite_env`); :class:`NoEnvironment` says why there is none."""
        from hpt_kit_robomimic.robosuite_env import environment

        return environment(spec, note)


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ImportSourceError(f"{path}: cannot be opened as HDF5 ({exc})") from exc


def _sum_samples(data: h5py.Group, demos: list[str]) -> int:
    """Steps from the demos' num_samples attributes; 0 (unknown) if any demo lacks it."""
    counts = [data[d].attrs.get("num_samples") for d in demos]
    return 0 if any(c is None for c in counts) else int(sum(int(c) for c in counts))


def _columns(demo: h5py.Group, selection: Selection, location: str) -> list[Column]:
    """Resolve and check every selected key against the first demo: a missing key or a dtype the kit
    cannot store concerns the whole source, so it raises here rather than per episode."""
    known = [f.key for f in layout.features(demo)]
    wanted = [(k, VECTOR) for k in selection.state] + [(selection.action, VECTOR)]
    wanted += [(k, IMAGE) for k in selection.views]
    columns = []
    for key, role in wanted:
        path = layout.resolve(key, demo)
        if path is None:
            raise ImportSourceError(f"{location}: no key {key!r}; the keys it has: {', '.join(known)}")
        ds = demo[path]
        step = tuple(int(n) for n in ds.shape[1:])
        found = layout.feature(path, ds)
        if role == VECTOR:
            if ds.dtype.kind not in NUMERIC_KINDS:
                raise ImportSourceError(
                    f"{location}: {path} is stored as {ds.dtype} in {demo.name}; a state or action key must be numbers"
                )
            if found.kind == IMAGE:
                raise ImportSourceError(
                    f"{location}: {path} holds frames {step}; pick it as a view, not state or action"
                )
        elif ds.dtype != np.uint8 or len(step) != 3 or step[-1] != 3:
            raise ImportSourceError(
                f"{location}: {path} is {ds.dtype} {step} per step; a view must be uint8 RGB frames (H, W, 3)"
            )
        columns.append(Column(key, path, role, step))
    return columns


def _read_demo(
    index: int, demo: h5py.Group, columns: list[Column], size: tuple[int, int] | None, shared: str | None
) -> SourceEpisode:
    """One demo's selected keys, or a problem naming the demo and key when only this demo is bad (the
    kit prefixes the file and episode number)."""
    name = demo.name.rsplit("/", 1)[-1]
    arrays: dict[str, np.ndarray] = {}
    for col in columns:
        read = _read_column(demo, col, size)
        if isinstance(read, str):
            return SourceEpisode(index, problem=f"{name}{read}")
        arrays[col.key] = read
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        detail = ", ".join(f"{c.path} {len(arrays[c.key])}" for c in columns)
        return SourceEpisode(index, problem=f"{name}: keys differ in length ({detail})")
    if lengths == {0}:
        return SourceEpisode(index, problem=f"{name} has no steps")
    lang = layout.language(layout.episode_meta(demo), demo.attrs) or shared
    return SourceEpisode(index, arrays=arrays, instruction=lang)


def _read_column(demo: h5py.Group, col: Column, size: tuple[int, int] | None) -> np.ndarray | str:
    """A vector as float32 (T, D) (a scalar per step is (T, 1)) or frames as uint8 (T, H, W, 3); or
    what is wrong with it, as text that follows the demo's name."""
    ds = demo.get(col.path)
    if not isinstance(ds, h5py.Dataset):
        return f" has no {col.path}"
    step = tuple(int(n) for n in ds.shape[1:])
    if step != col.step:
        return f"/{col.path} has per-step shape {step}, other demos {col.step}"
    if col.kind == VECTOR and ds.dtype.kind not in NUMERIC_KINDS:
        return f"/{col.path} is stored as {ds.dtype}, not numbers"
    try:
        raw = ds[()]
    except OSError as exc:
        return f"/{col.path} cannot be read ({exc})"
    if col.kind != VECTOR:
        return _resize(raw, size)
    values = raw.astype(np.float32).reshape(len(raw), -1)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        return f"/{col.path} is not finite at step {int(bad[0][0])}"
    return values


def _resize(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames scaled to ``size`` (height, width) if it differs from the stored one."""
    if size is None or tuple(size) == frames.shape[1:3]:
        return np.ascontiguousarray(frames)
    height, width = size
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for t, frame in enumerate(frames):
        out[t] = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))
    return out
