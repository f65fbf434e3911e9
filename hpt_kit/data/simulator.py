"""Which simulator evaluates a policy for an embodiment: its plugin's, or, for an imported dataset, the
one its importer rebuilds from the environment the source recorded (``Importer.environment``, e.g.
robomimic's env_args naming a robosuite task). ``hpt-kit eval`` and ``hpt-kit experiment`` ask here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpt_kit.core.importer import NoEnvironment
from hpt_kit.core.registry import Registry
from hpt_kit.core.spec import Embodiment, EmbodimentData
from hpt_kit.data.importing import IMPORT_NOTE, is_imported


def simulator(registry: Registry, name: str, spec: EmbodimentData | None = None, notes: Mapping[str, Any] | None = None) -> Embodiment:
    """The embodiment whose ``rollout`` evaluates ``name``: the registered plugin's, else the imported
    dataset's rebuilt environment. ``spec`` and ``notes`` are the dataset's (a checkpoint's copy of
    them); without them the dataset in the dataset root is read. An unknown name raises the registry's
    error; an imported dataset without a buildable environment raises :class:`NoEnvironment` with the
    reason."""
    if name in registry.embodiments:
        return registry.embodiment(name)
    if spec is None or notes is None:
        from hpt_kit.data.convert import default_dataset_path
        from hpt_kit.data.store import Dataset

        path = default_dataset_path(name)
        if not path.exists():
            registry.embodiment(name)  # the registry's error, listing the known names
        ds = Dataset(path)
        spec, notes = ds.spec, ds.notes
    if not is_imported(notes):
        raise NoEnvironment(f"{name} is not a registered embodiment, and its dataset was not imported")
    note = notes[IMPORT_NOTE]
    fmt = note.get("format", "")
    importer = registry.importers.get(fmt)
    if importer is None:
        raise NoEnvironment(f"the {fmt!r} importer that made it is not installed")
    build = getattr(importer.importer, "environment", None)
    if build is None:
        raise NoEnvironment(f"the {fmt} importer rebuilds no simulator")
    return build(spec, note)
