"""``scaffold_embodiment`` writes a complete plugin package, and its plugin passes the contract."""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

import pytest

from hpt_kit.contract import check_embodiment
from hpt_kit.core.spec import RolloutRequest
from hpt_kit.scaffold import scaffold_embodiment

EXPECTED_FILES = {
    "pyproject.toml",
    "README.md",
    "hpt_kit_my_arm/__init__.py",
    "hpt_kit_my_arm/plugin.py",
    "hpt_kit_my_arm/robot.xml",
    "tests/test_my_arm.py",
}


@pytest.fixture
def package(tmp_path) -> Path:
    return scaffold_embodiment("my_arm", tmp_path / "my_arm")


@pytest.fixture
def plugin(package):
    """The generated plugin module, imported from the scaffolded folder and forgotten afterwards."""
    sys.path.insert(0, str(package))
    try:
        yield importlib.import_module("hpt_kit_my_arm.plugin")
    finally:
        sys.path.remove(str(package))
        for name in [m for m in sys.modules if m == "hpt_kit_my_arm" or m.startswith("hpt_kit_my_arm.")]:
            del sys.modules[name]


def test_writes_the_whole_package_and_nothing_else(package, tmp_path):
    files = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    assert files == EXPECTED_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["my_arm"]  # the staging folder is gone
    for path in package.rglob("*"):
        if path.is_file():
            assert "{{" not in path.read_text(), f"unsubstituted placeholder in {path}"


def test_pyproject_declares_the_entry_point(package):
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    assert project["name"] == "hpt-kit-my_arm"
    assert project["entry-points"]["hpt_kit"] == {"my_arm": "hpt_kit_my_arm.plugin"}
    assert {"hpt-kit", "numpy"} <= set(project["dependencies"])
    assert any(dep.startswith("mujoco") for dep in project["dependencies"])


def test_generated_plugin_passes_the_contract(plugin):
    registered = []

    class Collect:
        def add(self, embodiment):
            registered.append(embodiment)

    plugin.hpt_register_embodiments(Collect())
    assert [e.name for e in registered] == ["my_arm"]
    report = check_embodiment(registered[0])
    assert [ep["state"].shape[1] for ep in report.episodes] == [12, 12]
    assert report.controller_calls > 0


def test_generated_expert_reaches_the_target(plugin):
    result = plugin.expert_rollout(RolloutRequest(episodes=20, seed=0))
    assert sum(result.successes) >= 19, result


def test_generated_plugin_does_not_depend_on_the_mujoco_plugin(package):
    for path in package.rglob("*.py"):
        assert "hpt_kit_mujoco" not in path.read_text()


def test_refuses_to_overwrite(package):
    marker = package / "README.md"
    before = marker.read_text()
    with pytest.raises(FileExistsError, match="already exists"):
        scaffold_embodiment("my_arm", package)
    assert marker.read_text() == before
    assert sorted(p.name for p in package.parent.iterdir()) == ["my_arm"]


def test_refuses_an_existing_empty_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        scaffold_embodiment("taken", tmp_path / "taken")
    assert list((tmp_path / "taken").iterdir()) == []


@pytest.mark.parametrize("name", ["my-arm", "1arm", "class", "", "MyArm", "_arm", "my__arm"])
def test_rejects_bad_names_and_writes_nothing(tmp_path, name):
    with pytest.raises(ValueError, match="e.g. 'my_arm'"):
        scaffold_embodiment(name, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_default_directory_outside_the_kit_is_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = scaffold_embodiment("grip2")
    assert path == Path("grip2")
    assert (tmp_path / "grip2" / "hpt_kit_grip2" / "plugin.py").is_file()


def test_default_directory_is_the_kits_embodiments_only_inside_its_checkout(tmp_path):
    from hpt_kit.scaffold import default_directory
    from tests.conftest import ROOT

    assert default_directory("my_arm", ROOT) == Path("embodiments") / "my_arm"
    assert default_directory("my_arm", tmp_path) == Path("my_arm")
    # A project of its own with an embodiments/ folder is not the kit.
    (tmp_path / "embodiments").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "my-robots"\n')
    assert default_directory("my_arm", tmp_path) == Path("my_arm")


def test_add_embodiment_outside_the_kit_writes_into_the_current_folder(tmp_path):
    import os
    import subprocess

    from tests.conftest import HPT_KIT

    out = subprocess.run([HPT_KIT, "add-embodiment", "my_arm"], capture_output=True, text=True, cwd=tmp_path, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "my_arm" / "pyproject.toml").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["my_arm"]  # no embodiments/ folder appeared
    assert "created my_arm" in out.stdout and "pip install -e my_arm" in out.stdout
