"""Which simulator evaluates an embodiment (``hpt_kit.data.simulator``): the registered plugin's, or
the environment an imported dataset's importer rebuilds, and the reason when there is none. The
importers here are small in-memory ones registered through the real registrar; robomimic's
robosuite environment is tested in its plugin."""

from typing import Any

import pytest

from hpt_kit.core.importer import NoEnvironment
from hpt_kit.core.registry import (
    EmbodimentRegistrar,
    ImporterRegistrar,
    PluginInfo,
    UnknownNameError,
    load_registry,
)
from hpt_kit.core.spec import ActionSpec, Embodiment, ObservationSpec
from hpt_kit.data.convert import default_dataset_path
from hpt_kit.data.importing import ImportOptions, import_dataset
from hpt_kit.data.simulator import simulator
from hpt_kit.data.store import Dataset
from tests.data.test_importing import ListImporter

PLUGIN = PluginInfo("toys", "toys", "0")


class Rebuilding(ListImporter):
    """An importer that rebuilds a simulator, remembering what it was asked with."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[Any, Any]] = []

    def environment(self, spec, note) -> Embodiment:
        self.asked.append((spec, note))
        if note["source"].endswith("broken"):
            raise NoEnvironment("the source names a simulator that is not installed")
        return _toy(spec.name)


def _toy(name: str) -> Embodiment:
    return Embodiment(
        name=name, observation=ObservationSpec(state_dim=4), action=ActionSpec(dim=2, low=(-1.0,) * 2, high=(1.0,) * 2, control_hz=10.0),
        convert_dataset=lambda request: iter(()), rollout=lambda controller, request: None,
    )  # fmt: skip


def _registry(importer=None, embodiment=None):
    registry = load_registry(load_entrypoints=False, embodiments=False)
    if importer is not None:
        ImporterRegistrar(registry, PLUGIN).add(importer)
    if embodiment is not None:
        EmbodimentRegistrar(registry, PLUGIN).add(embodiment)
    assert not registry.errors
    return registry


def _import(tmp_path, name: str, source: str = "src") -> Dataset:
    (tmp_path / source).mkdir()
    opts = ImportOptions(name=name, views=(), text_encoder="none")
    return Dataset(import_dataset(ListImporter(), str(tmp_path / source), default_dataset_path(name), opts))


def test_a_registered_embodiment_is_its_own_simulator(data_root):
    toy = _toy("arm")
    assert simulator(_registry(embodiment=toy), "arm") is toy


def test_an_imported_dataset_gets_the_environment_its_importer_rebuilds(tmp_path, data_root):
    ds = _import(tmp_path, "imported")
    importer = Rebuilding()
    emb = simulator(_registry(importer), "imported")  # read from the dataset root
    assert emb.name == "imported" and emb.rollout is not None
    spec, note = importer.asked[0]
    assert spec == ds.spec and note == ds.notes["import"] and note["state_keys"] == ["obs.pos", "obs.grip"]
    simulator(_registry(importer), "imported", ds.spec, ds.notes)  # a checkpoint's copies: the same call
    assert importer.asked[1] == importer.asked[0]


def test_no_simulator_says_why(tmp_path, data_root):
    ds = _import(tmp_path, "imported")
    with pytest.raises(NoEnvironment, match="the 'toylist' importer that made it is not installed"):
        simulator(_registry(), "imported")
    with pytest.raises(NoEnvironment, match="the toylist importer rebuilds no simulator"):
        simulator(_registry(ListImporter()), "imported")
    broken = _import(tmp_path, "other", source="broken")
    with pytest.raises(NoEnvironment, match="names a simulator that is not installed"):
        simulator(_registry(Rebuilding()), "other", broken.spec, broken.notes)
    with pytest.raises(NoEnvironment, match="not a registered embodiment, and its dataset was not imported"):
        simulator(_registry(Rebuilding()), "imported", ds.spec, {})
    with pytest.raises(UnknownNameError, match="unknown embodiment 'nowhere'"):
        simulator(_registry(Rebuilding()), "nowhere")
