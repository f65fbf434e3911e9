"""Registers the ``robomimic`` importer through the ``hpt_kit`` entry point. The importer module (and
h5py with it) is imported only when the kit collects importers, not when the entry point loads."""

from __future__ import annotations

import hpt_kit


@hpt_kit.hookimpl
def hpt_register_importers(registry) -> None:
    from hpt_kit_robomimic.importer import RobomimicImporter

    registry.add(RobomimicImporter())
