"""Plain data <-> frozen dataclasses, driven by the dataclasses' type hints.

Recipes (TOML), embodiment specs (JSON in datasets and checkpoints) and the options of stems and heads
are all frozen dataclasses read from plain data. One converter reads them, so every one of them
rejects an unknown key, a missing required key and a value of the wrong type the same way, with a
message naming the key (``<where>.<key>: <what to change>``); range checks stay in each dataclass's
``__post_init__``. :func:`to_data` is the inverse, and :func:`to_toml` writes its result as TOML.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from hpt_kit.core.spec import HeadSpec, StemSpec

T = TypeVar("T")

# Field metadata of a dataclass field that is not a key of the data (a recipe's source file, an
# embodiment's callables): never read from data, never written to it.
NOT_A_KEY = types.MappingProxyType({"config_key": False})
# Field metadata of a key added to a stored format later (a spec's names): left out of the data while
# it holds its default, so what older kits wrote reads back and is written again byte for byte.
OMIT_DEFAULT = types.MappingProxyType({"omit_default": True})


class ConfigError(ValueError):
    """Data that does not fit its dataclass: ``<where>: <what to change>``."""


def is_key(f: dataclasses.Field) -> bool:
    return f.metadata.get("config_key", True)


def scalar_matches(value: Any, tp: Any) -> bool:
    """Whether a config value has type ``tp``: an int counts as a float, a bool never as a number."""
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` (plain data: TOML or JSON) as type ``tp``; a :class:`ConfigError` naming ``where``.

    Lists become tuples where the hint says tuple, tables become dataclasses; ``X | None`` takes
    None (JSON null: TOML has none). Ints are widened to floats where a float is expected.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)  # only tuple[X, ...] is used
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) != 1:
            raise ConfigError(f"{where}: unsupported union type {tp}")  # only X | None is used
        return None if value is None else convert(value, options[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_data(tp, value, where)
    if not scalar_matches(value, tp):
        raise ConfigError(f"{where}: must be {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def from_data(cls: type[T], table: Mapping[str, Any], where: str = "") -> T:
    """The dataclass ``cls`` from a table: every key known and converted, defaults filled in.

    A ``ValueError`` from ``cls.__post_init__`` becomes a :class:`ConfigError` naming ``where``.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if is_key(f)}
    unknown = sorted(set(table) - set(fields))
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in table:
            kwargs[name] = convert(table[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_data(value: Any) -> Any:
    """A dataclass as plain data (dicts, lists, scalars), ready for JSON or :func:`to_toml`.

    The inverse of :func:`from_data`: tuples become lists (as JSON stores them), fields marked
    :data:`NOT_A_KEY` are left out, and so are fields marked :data:`OMIT_DEFAULT` at their default.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_data(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if is_key(f) and not (f.metadata.get("omit_default") and getattr(value, f.name) == f.default)
        }
    if isinstance(value, list | tuple):
        return [to_data(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_data(v) for k, v in value.items()}
    return value


def read_toml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A TOML file as a dict, or a :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what} file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def to_toml(data: Mapping[str, Mapping[str, Any] | list[Mapping[str, Any]]]) -> str:
    """Plain data of sections as TOML: each table as ``[name]``, then each list of tables as
    ``[[name]]`` entries (TOML wants the arrays after the tables they would otherwise reopen)."""
    lines: list[str] = []
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    arrays = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    for name, table in tables.items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in table.items()), ""]
    for name, entries in arrays.items():
        for entry in entries:
            lines += [f"[[{name}]]", *(f"{k} = {toml_value(v)}" for k, v in entry.items()), ""]
    return "\n".join(lines)


def toml_value(v: Any) -> str:
    """One value as TOML: strings through JSON escaping (a subset of TOML's basic strings)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


Options = TypeVar("Options")


def parse_options(cls: type[Options], spec: HeadSpec | StemSpec, name: str, what: str = "head") -> Options:
    """``spec.options`` as the component's frozen options dataclass ``cls``, defaults filled in.

    Heads and stems share it (``what`` is "head" or "stem", ``name`` its kind). A key the component
    does not know is an error rather than ignored: a typo in a recipe's options would otherwise train
    with the default and nobody would notice. Values must have the field's type (an int is accepted
    where a float is expected); range checks belong to ``cls.__post_init__``.
    """
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in spec.options.items():
        if key not in known:
            raise ValueError(f"{what} {name!r}: unknown option {key!r}; known: {', '.join(known)}")
        tp = hints[key]
        if not scalar_matches(value, tp):
            raise ValueError(f"{what} {name!r}: option {key!r} must be {_python_type_name(tp)}, got {value!r}")
    try:
        return cls(**{k: (float(v) if hints[k] is float else v) for k, v in spec.options.items()})
    except ValueError as exc:
        raise ValueError(f"{what} {name!r}: {exc}") from None


def _python_type_name(tp: Any) -> str:
    """Options name their types as Python spells them (plugin authors write the option classes)."""
    return getattr(tp, "__name__", None) or str(tp)  # a union such as ``str | None`` has no __name__
