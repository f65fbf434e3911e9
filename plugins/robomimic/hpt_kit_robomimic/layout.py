"""What a robomimic HDF5 file looks like on disk, and how its names map to the kit's keys.

The layout (robomimic's ``docs/datasets/overview``, written by robosuite's converters and
``dataset_states_to_obs.py``)::

    data                    group; attrs: total (steps), env_args (a JSON string)
        demo_N              group per demonstration; attr num_samples
            actions         (T, A)
            rewards, dones  (T,)
            states          (T, S) flattened MuJoCo states
            obs/<key>       (T, ...) low-dim vectors, or (T, H, W, 3) uint8 images ("*_image")
            next_obs/<key>  the same, one step later (not imported: it repeats obs)
    mask                    group at the top level (beside data), only when filter keys exist
        <filter_key>        (K,) bytes: the demo names in that subset ("train", "valid", ...)

Demos are read in numeric order (demo_2 before demo_10), as robomimic's own ``SequenceDataset`` does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np
from hpt_kit.core.importer import IMAGE, VECTOR, Feature, ImportSourceError

DATA = "data"
MASK = "mask"
OBS = "obs"
# Per-demo datasets beside obs/ that a user may pick (``states`` as state, ``rewards`` for analysis).
TOP_LEVEL = ("actions", "rewards", "dones", "states")
ACTION = "actions"
# robomimic's usual low-dim observation set for robosuite tasks, in the order its configs list it.
USUAL_STATE = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
IMAGE_SUFFIX = "_image"
# Where a language instruction may be found (robocasa's ep_meta uses "lang"; robomimic's language
# branch sets env_meta["env_lang"]); robomimic v0.1 datasets carry none.
LANGUAGE_FIELDS = ("lang", "language", "language_instruction", "instruction", "env_lang")
ROBOSUITE_ENV_TYPE = 1  # robomimic.envs.env_base.EnvType.ROBOSUITE_TYPE
_DEMO = re.compile(r"^demo_(\d+)$")


def data_group(f: h5py.File, location: str) -> h5py.Group:
    group = f.get(DATA)
    if not isinstance(group, h5py.Group):
        raise ImportSourceError(f"{location}: no 'data' group, so not a robomimic HDF5 dataset")
    return group


def text(value: Any) -> str:
    """An HDF5 attribute as text: h5py returns str, bytes or a 0-d bytes array depending on the writer."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    return str(value)


def env_args(data: h5py.Group, location: str) -> dict[str, Any]:
    """The environment metadata robomimic needs to rebuild the simulator; {} when a file has none.

    A raw robosuite ``demo.hdf5`` (before robomimic's ``convert_robosuite.py``) has ``env`` and
    ``env_info`` instead; they are read the way that script reads them."""
    if "env_args" not in data.attrs:
        if "env" in data.attrs and "env_info" in data.attrs:
            info = _json(data.attrs["env_info"], "env_info", location)
            return {"env_name": text(data.attrs["env"]), "type": ROBOSUITE_ENV_TYPE, "env_kwargs": info}
        return {}
    return _json(data.attrs["env_args"], "env_args", location)


def _json(value: Any, name: str, location: str) -> dict[str, Any]:
    raw = text(value)
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ImportSourceError(f"{location}: data.attrs[{name!r}] is not valid JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise ImportSourceError(f"{location}: data.attrs[{name!r}] is JSON but not an object")
    return parsed


def demo_names(data: h5py.Group) -> list[str]:
    """The demo groups in numeric order; groups not named demo_N follow, by name."""
    names = [name for name, item in data.items() if isinstance(item, h5py.Group)]

    def order(name: str) -> tuple[int, int, str]:
        m = _DEMO.match(name)
        return (0, int(m.group(1)), "") if m else (1, 0, name)

    return sorted(names, key=order)


def filter_keys(f: h5py.File) -> dict[str, list[str]]:
    """Every filter key with the demos it lists, in the order stored."""
    mask = f.get(MASK)
    if not isinstance(mask, h5py.Group):
        return {}
    return {
        name: [text(v) for v in np.asarray(item[()]).reshape(-1)]
        for name, item in mask.items()
        if isinstance(item, h5py.Dataset)
    }


def select_demos(f: h5py.File, demos: list[str], options: Mapping[str, str], location: str) -> list[str]:
    """The demos to import: all, or those that ``filter_key`` lists (still in numeric order)."""
    unknown = sorted(set(options) - {"filter_key"})
    if unknown:
        raise ImportSourceError(
            f"{location}: unknown option {unknown[0]!r}; the robomimic importer knows: filter_key"
        )
    key = options.get("filter_key")
    if not key:
        return demos
    keys = filter_keys(f)
    if key not in keys:
        known = ", ".join(sorted(keys)) or "none"
        raise ImportSourceError(
            f"{location}: no filter key {key!r} under mask/; the filter keys it has: {known}"
        )
    listed = set(keys[key])
    chosen = [d for d in demos if d in listed]
    # Demos a mask names but data lacks stay in the list so that episodes() can report them one by one.
    return chosen + sorted(listed - set(demos), key=lambda n: (0, int(n[5:])) if _DEMO.match(n) else (1, n))


def is_image(key: str, shape: tuple[int, ...]) -> bool:
    """Per-step (H, W, C) arrays are frames (RGB "*_image", also depth maps); the rest are vectors."""
    return len(shape) == 3 or (key.endswith(IMAGE_SUFFIX) and len(shape) >= 2)


def feature(key: str, ds: h5py.Dataset) -> Feature:
    step = tuple(int(n) for n in ds.shape[1:])
    if is_image(key, step):
        return Feature(key, IMAGE, step, ds.dtype.name)
    return Feature(key, VECTOR, (math.prod(step),), ds.dtype.name)


def features(demo: h5py.Group) -> tuple[Feature, ...]:
    """The keys a demo holds, as the kit names them: obs/<key> (sorted), then actions, rewards, ..."""
    found = []
    obs = demo.get(OBS)
    if isinstance(obs, h5py.Group):
        found += [feature(f"{OBS}/{k}", ds) for k, ds in sorted(obs.items()) if isinstance(ds, h5py.Dataset)]
    found += [feature(k, demo[k]) for k in TOP_LEVEL if isinstance(demo.get(k), h5py.Dataset)]
    return tuple(found)


def default_keys(feats: Iterable[Feature]) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """(state keys, action key, views): the usual low-dim obs, ``actions`` and the RGB cameras."""
    feats = list(feats)
    obs = {f.key[len(OBS) + 1 :]: f for f in feats if f.key.startswith(f"{OBS}/")}
    state = tuple(f"{OBS}/{k}" for k in USUAL_STATE if k in obs and obs[k].kind == VECTOR)
    if not state:
        state = tuple(f"{OBS}/{k}" for k in sorted(obs) if obs[k].kind == VECTOR)
    action = ACTION if any(f.key == ACTION for f in feats) else ""
    views = tuple(
        f"{OBS}/{k}"
        for k, f in obs.items()
        if k.endswith(IMAGE_SUFFIX) and f.kind == IMAGE and f.dtype == "uint8" and f.shape[-1] == 3
    )
    return state, action, views


def resolve(key: str, demo: h5py.Group) -> str | None:
    """The path inside a demo for a user's key: ``obs/<key>``, ``<key>`` for an obs key, or a
    per-demo dataset such as ``actions`` (which wins over an obs key of the same name)."""
    if key in TOP_LEVEL or key.startswith(f"{OBS}/"):
        return key if isinstance(demo.get(key), h5py.Dataset) else None
    path = f"{OBS}/{key}"
    return path if isinstance(demo.get(path), h5py.Dataset) else None


def language(*sources: Mapping[str, Any]) -> str | None:
    """The first language field found in attributes or metadata dicts, searched in the order given."""
    for source in sources:
        for name in LANGUAGE_FIELDS:
            if name in source:
                value = text(source[name]).strip()
                if value:
                    return value
    return None


def episode_meta(demo: h5py.Group) -> dict[str, Any]:
    """robocasa-style per-demo metadata (``ep_meta``, a JSON string that may hold ``lang``)."""
    if "ep_meta" not in demo.attrs:
        return {}
    try:
        meta = json.loads(text(demo.attrs["ep_meta"]))
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def robots(env: Mapping[str, Any]) -> list[str]:
    names = env.get("env_kwargs", {}).get("robots", [])
    return [names] if isinstance(names, str) else [str(n) for n in names]


def robosuite_facts(env: Mapping[str, Any]) -> dict[str, Any] | None:
    """The robosuite environment and robots, so that the kit can later match an embodiment such as
    ``robosuite-panda``; None when env_args does not name a robosuite environment."""
    if env.get("type") != ROBOSUITE_ENV_TYPE or not env.get("env_name"):
        return None
    kwargs = env.get("env_kwargs", {})
    controller = kwargs.get("controller_configs", {})
    facts = {"env_name": env["env_name"], "robots": robots(env)}
    if isinstance(controller, dict) and controller.get("type"):
        facts["controller"] = controller["type"]
        parts = controller.get("body_parts") or {}
        arm = next((p.get("type") for p in parts.values() if isinstance(p, dict) and p.get("type")), None)
        if arm:  # robosuite 1.5 composite controllers name the arm's controller per body part
            facts["arm_controller"] = arm
    if "control_freq" in kwargs:
        facts["control_freq"] = kwargs["control_freq"]
    if env.get("env_version"):
        facts["version"] = env["env_version"]
    return facts
