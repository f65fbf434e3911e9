"""Spec drift: a plugin whose data layout changed after a dataset or checkpoint was made from it.

Every dataset (store attribute ``spec``) and checkpoint (``checkpoint.json``, per embodiment) stores
the spec it was made with. That stored spec is the fingerprint: wherever a stored spec meets the
registered plugin (``convert`` onto an existing dataset, ``pretrain``/``transfer`` opening a dataset,
``eval``, ``eval --server``), the fields that shape data are compared one by one, so the error names
each field that differs with both values instead of reporting that two digests disagree, and data
written before this check existed is checked the same way.

Compared (the per-step layout of what is stored and what a policy consumes): ``state_dim``,
``action.dim``, ``action.control_hz``, the camera (``image``: views, height, width, channels),
plugin-made ``image_features`` (views, tokens, channels) and ``language`` (tokens, channels, encoder).
An optional camera (``Embodiment.camera_optional``) may be absent from the stored spec.
Not compared, because a run may legitimately change them or they shape nothing stored: horizons, stems
and head (recipes override them per run), action bounds (normalisation comes from the data), the
episode limit and the description. Features the kit computed at conversion (``image_features`` with
an ``encoder``) are the kit's, not the plugin's, and are not compared either.
"""

from __future__ import annotations

from typing import Any

from hpt_kit.core.spec import EmbodimentData, SpecError


class SpecDriftError(SpecError):
    """A stored spec that no longer matches its embodiment's plugin; the message names the fields."""


def spec_drift(plugin: EmbodimentData, stored: EmbodimentData) -> list[tuple[str, Any, Any]]:
    """The data-shaping fields whose values differ, as ``(field, plugin value, stored value)``."""
    return [(name, mine, theirs) for name, mine, theirs in _pairs(plugin, stored) if mine != theirs]


def check_drift(plugin: EmbodimentData, stored: EmbodimentData, where: str, fix: str = "") -> None:
    """Raise :class:`SpecDriftError` (one line: the embodiment, each differing field with its value in
    the plugin and in ``where``, then ``fix``) when the plugin's spec no longer matches ``stored``."""
    diffs = spec_drift(plugin, stored)
    if not diffs:
        return
    fields = "; ".join(f"{name} {_show(mine)} in the plugin, {_show(theirs)} in {where}" for name, mine, theirs in diffs)
    tail = f"; {fix}" if fix else ""
    raise SpecDriftError(f"embodiment {plugin.name!r} changed since {where} was made: {fields}{tail}")


def _pairs(plugin: EmbodimentData, stored: EmbodimentData) -> list[tuple[str, Any, Any]]:
    po, so = plugin.observation, stored.observation
    pairs: list[tuple[str, Any, Any]] = [
        ("state_dim", po.state_dim, so.state_dim),
        ("action.dim", plugin.action.dim, stored.action.dim),
        ("action.control_hz", float(plugin.action.control_hz), float(stored.action.control_hz)),
        ("observation.image", None if _camera_not_rendered(plugin, stored) else _image(po.image), _image(so.image)),
        ("observation.language", _language(po.language), _language(so.language)),
    ]
    kit_features = so.image_features is not None and so.image_features.encoder is not None
    if po.image_features is not None or not kit_features:
        pairs.append(("observation.image_features", _features(po.image_features), _features(so.image_features)))
    return pairs


def _camera_not_rendered(plugin: EmbodimentData, stored: EmbodimentData) -> bool:
    """An optional camera (``Embodiment.camera_optional``) that the stored data was made without."""
    return bool(getattr(plugin, "camera_optional", False)) and stored.observation.image is None


def _image(spec: Any) -> Any:
    return None if spec is None else {"views": list(spec.views), "height": spec.height, "width": spec.width, "channels": spec.channels}


def _features(spec: Any) -> Any:
    return None if spec is None else {"views": list(spec.views), "tokens": spec.tokens, "channels": spec.channels}


def _language(spec: Any) -> Any:
    return None if spec is None else {"tokens": spec.tokens, "channels": spec.channels, "encoder": spec.encoder}


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_show(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
