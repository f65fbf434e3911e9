"""Registers the ``lerobot`` importer and exporter through the ``hpt_kit`` entry point. Registration
imports neither pyarrow nor PyAV: they load when a dataset is first described, read or written."""

from __future__ import annotations

import hpt_kit


@hpt_kit.hookimpl
def hpt_register_importers(registry) -> None:
    from hpt_kit_lerobot.importer import LeRobotImporter

    registry.add(LeRobotImporter())


@hpt_kit.hookimpl
def hpt_register_exporters(registry) -> None:
    from hpt_kit_lerobot.export import LeRobotExporter

    registry.add(LeRobotExporter())
