"""Turning an embodiment plugin's ``convert_dataset`` into a dataset on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hpt_kit.data.store import write_dataset
from hpt_kit.embodiment import ConvertRequest, Embodiment, SpecError

if TYPE_CHECKING:
    from hpt_kit.registry import Registry


def dataset_root() -> Path:
    """Where datasets live unless a path is given: $HPT_KIT_DATA, else ~/.cache/hpt-kit/datasets."""
    env = os.environ.get("HPT_KIT_DATA")
    return Path(env) if env else Path.home() / ".cache" / "hpt-kit" / "datasets"


def default_dataset_path(name: str) -> Path:
    return dataset_root() / f"{name}.zarr"


def convert(
    embodiment: Embodiment,
    out: str | Path | None = None,
    episodes: int = 50,
    seed: int = 0,
    render: bool = False,
    overwrite: bool = False,
    on_episode: Callable[[int, int], None] | None = None,
    registry: Registry | None = None,
) -> Path:
    """Run the plugin's converter and store exactly ``episodes`` validated episodes at ``out``.

    If the spec's language names a text encoder, each episode's ``instruction`` is encoded with it
    (``registry``'s, by default the installed ones) into ``language``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    path = Path(out) if out is not None else default_dataset_path(embodiment.name)
    request = ConvertRequest(episodes=episodes, seed=seed, render=render)

    def counted():
        n = 0
        for ep in embodiment.convert_dataset(request):
            if n == episodes:
                raise SpecError(f"embodiment {embodiment.name!r}: convert_dataset gave more than {episodes} episodes")
            n += 1
            yield ep
        if n != episodes:
            raise SpecError(f"embodiment {embodiment.name!r}: asked for {episodes} episodes, convert_dataset gave {n}")

    notes = request.notes
    notes.setdefault("seed", seed)
    stream = counted()
    language = embodiment.observation.language
    if language is not None and language.encoder:
        from hpt_kit.language import instructions_for, with_language

        stream = with_language(embodiment.name, stream, instructions_for(language, registry), notes)
    return write_dataset(path, embodiment, stream, notes=notes, overwrite=overwrite, on_episode=on_episode)
