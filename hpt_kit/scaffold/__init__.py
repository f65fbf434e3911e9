"""``add-embodiment``: write a new, installable embodiment plugin package from the template.

The template under ``template/`` is a complete plugin for a small MuJoCo arm; every ``{{name}}`` (the
Python name) and ``{{embodiment}}`` (the embodiment name: the same, so that ``hpt-kit convert NAME``
works) in file contents and file names is substituted. The package is written to a temporary sibling folder and renamed into
place at the end, so an interrupted run never leaves a half-written plugin behind.
"""

from __future__ import annotations

import keyword
import os
import shutil
import uuid
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from hpt_kit.core.checkout import in_kit_checkout
from hpt_kit.core.spec import NAME_PATTERN

TEMPLATE = "template"
SKIPPED = {"__pycache__", ".DS_Store"}


def check_name(name: str) -> None:
    """Raise ValueError unless ``name`` works both as a module name and as an embodiment name."""
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or keyword.iskeyword(name)
        or not NAME_PATTERN.match(name)
    ):
        raise ValueError(
            f"invalid embodiment name {name!r}: use a Python identifier of lowercase letters, digits and "
            "single underscores that starts with a letter and is not a Python keyword, e.g. 'my_arm'"
        )


def default_directory(name: str, cwd: Path | None = None) -> Path:
    """Where ``add-embodiment NAME`` writes without ``--dir``: ``embodiments/NAME`` in the kit's own
    checkout (beside the kit's embodiments), ``./NAME`` anywhere else (a third party's own project)."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    return Path("embodiments") / name if in_kit_checkout(cwd) else Path(name)


def scaffold_embodiment(name: str, directory: Path | None = None) -> Path:
    """Write the plugin package for embodiment ``name`` into ``directory`` and return its path.

    ``directory`` defaults to :func:`default_directory` and must not exist.
    """
    check_name(name)
    target = Path(directory) if directory is not None else default_directory(name)
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose another directory or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    values = {"{{name}}": name, "{{embodiment}}": name}
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _render(resources.files(__package__).joinpath(TEMPLATE), staging, values)
        if target.exists():  # created by someone else meanwhile; rename would replace an empty folder
            raise FileExistsError(f"{target} already exists; choose another directory or remove it first")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _substitute(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def _render(source: Traversable, destination: Path, values: dict[str, str]) -> None:
    for entry in source.iterdir():
        if entry.name in SKIPPED or entry.name.endswith(".pyc"):
            continue
        out = destination / _substitute(entry.name, values)
        if entry.is_dir():
            out.mkdir()
            _render(entry, out, values)
        else:
            out.write_text(_substitute(entry.read_text(encoding="utf-8"), values), encoding="utf-8")
