"""``--set KEY=VALUE``: recipe settings changed from the command line.

An override is applied to the recipe's plain data (the TOML tables) before the typed recipe is built,
so a set value is validated exactly like one written in the file: an unknown key, a wrong type or an
out-of-range value is the same :class:`~hpt_kit.core.recipe.RecipeError`, which then also names the
``--set`` that caused it. Keys are dotted paths with list indices, as the recipe's own errors spell
them: ``train.lr``, ``datasets[1].weight``, ``datasets[0].stem_options.image.resize``. Values are TOML
values (``3e-4``, ``true``, ``"text"``, ``[1, 2]``, ``{ layers = 2 }``); a value that is not valid
TOML is taken as a plain string, so ``run.name=arm4`` needs no quotes.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hpt_kit.core.recipe import Recipe, RecipeError, parse_recipe, read_toml

T = TypeVar("T")
_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)((?:\[\d+\])*)$")


@dataclass(frozen=True)
class Override:
    text: str  # as given on the command line, for messages
    path: tuple[str | int, ...]  # table keys and list indices
    value: Any

    @property
    def key(self) -> str:
        """The path as recipe errors spell it: ``datasets[1].weight``."""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out


def parse_override(text: str) -> Override:
    """``KEY=VALUE`` as an :class:`Override`; a malformed one is a RecipeError quoting it."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {text}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    path: list[str | int] = []
    for segment in key.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            raise RecipeError(f"--set {text}: {segment!r} is not a key (names, then [N] list indices)")
        path.append(match.group(1))
        path += [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
    return Override(text, tuple(path), _toml_value(raw.strip()))


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """A copy of ``data`` with every override applied in order (later ones win). Missing tables on the
    way are created (``--set eval.episodes=5`` on a recipe without ``[eval]``); list indices must exist."""
    data = copy.deepcopy(data)
    for override in overrides:
        node: Any = data
        for depth, part in enumerate(override.path[:-1]):
            node = _child(node, part, override, depth, create=not isinstance(override.path[depth + 1], int))
        last = override.path[-1]
        _check_container(node, last, override, len(override.path) - 1)
        node[last] = override.value
    return data


def _child(node: Any, part: str | int, override: Override, depth: int, create: bool) -> Any:
    _check_container(node, part, override, depth)
    if isinstance(part, str) and part not in node:
        if not create:
            raise RecipeError(f"--set {override.text}: {_prefix(override, depth + 1)} does not exist")
        node[part] = {}
    return node[part]


def _check_container(node: Any, part: str | int, override: Override, depth: int) -> None:
    where = _prefix(override, depth) or "the recipe"
    if isinstance(part, int):
        if not isinstance(node, list):
            raise RecipeError(f"--set {override.text}: {where} is not a list")
        if part >= len(node):
            raise RecipeError(f"--set {override.text}: {where} has {len(node)} entries (indices 0-{len(node) - 1})")
    elif not isinstance(node, dict):
        raise RecipeError(f"--set {override.text}: {where} is not a table")


def _prefix(override: Override, depth: int) -> str:
    return Override(override.text, override.path[:depth], None).key


def naming_overrides(build: Callable[[], T], overrides: Sequence[Override]) -> T:
    """``build()``, with a RecipeError that concerns an overridden key extended by the ``--set`` that
    set it (the key itself, or a table holding it whose own check failed, e.g. ``datasets[1]:``)."""
    try:
        return build()
    except RecipeError as exc:
        padded = f" {exc}"  # keys follow a space ("<file>: train.lr: ...") or open the message
        for override in reversed(overrides):
            key = override.key
            tables = [_prefix(override, d) for d in range(len(override.path) - 1, 0, -1)]
            if f" {key}:" in padded or f" {key}." in padded or any(f" {t}:" in padded for t in tables):
                raise RecipeError(f"{exc} (from --set {override.text})") from None
        raise


def load_recipe(path: str | Path, sets: Sequence[str] = ()) -> Recipe:
    """The recipe file at ``path`` with ``--set`` overrides applied before validation."""
    overrides = [parse_override(s) for s in sets]
    data = apply_overrides(read_toml(path), overrides)
    return naming_overrides(lambda: parse_recipe(data, str(path)), overrides)


def override_recipe(recipe: Recipe, sets: Sequence[str]) -> Recipe:
    """A recipe built in code (``transfer`` without a file) with ``--set`` overrides, validated again."""
    if not sets:
        return recipe
    overrides = [parse_override(s) for s in sets]
    data = apply_overrides(recipe.to_dict(), overrides)
    return naming_overrides(lambda: parse_recipe(data, recipe.source), overrides)


def load_section(
    path: str | Path,
    key: str,
    cls: type[T],
    sets: Sequence[str] = (),
    relative: Sequence[str] = (),
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> T:
    """A file of one ``[key]`` section (an experiment, a study) as ``cls``, with ``--set key.NAME=VALUE``
    overrides applied before validation (``prepare`` may normalise the tables in between). The fields
    named in ``relative`` that hold a path relative to the file, and exist there, become that path."""
    import dataclasses

    from hpt_kit.core.recipe import parse_table

    path = Path(path)
    overrides = [parse_override(s) for s in sets]
    data = apply_overrides(read_toml(path, key), overrides)
    data = prepare(data) if prepare else data
    if set(data) != {key}:
        raise RecipeError(f"{path}: expected only a [{key}] section, found {sorted(data)}")
    try:
        section = naming_overrides(lambda: parse_table(cls, data[key], key), overrides)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    resolved = {}
    for name in relative:
        value = getattr(section, name)
        if value and not Path(value).is_absolute() and (path.parent / value).exists():
            resolved[name] = str(path.parent / value)
    return dataclasses.replace(section, **resolved)
