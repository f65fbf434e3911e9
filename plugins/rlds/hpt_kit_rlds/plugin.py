"""Registers the ``rlds`` importer through the ``hpt_kit`` entry point. Registration reads nothing:
the importer opens a dataset's metadata only when asked to describe or import it."""

from __future__ import annotations

import hpt_kit

from hpt_kit_rlds.importer import RldsImporter


@hpt_kit.hookimpl
def hpt_register_importers(registry) -> None:
    registry.add(RldsImporter())
