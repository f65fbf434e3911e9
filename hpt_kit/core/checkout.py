"""Whether a folder is the root of the kit's own source checkout: there, ``add-embodiment`` writes
beside the kit's embodiments and datasets default to the checkout's ``data/`` (as ``make demo`` uses)."""

from __future__ import annotations

from pathlib import Path


def in_kit_checkout(folder: Path) -> bool:
    """Whether ``folder`` is the root of the kit's own source checkout (its ``pyproject.toml`` names
    the ``hpt-kit`` project and it has an ``embodiments/`` folder)."""
    import tomllib

    pyproject = folder / "pyproject.toml"
    if not (pyproject.is_file() and (folder / "embodiments").is_dir()):
        return False
    try:
        return tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("name") == "hpt-kit"
    except (OSError, tomllib.TOMLDecodeError):
        return False
