"""The kit's floors (``[tool.importlinter]`` in pyproject.toml, drawn in docs/architecture.md): no
module imports from a floor above its own. Checked by import-linter on the installed source, and
shown to catch an upward import in a copy of the package."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    # Run in ``root``: its pyproject.toml holds the contract, and its package (a copy, not the
    # installed one) is the one analysed.
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        timeout=300,
    )


def test_no_module_imports_from_a_floor_above_its_own():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    copy = tmp_path / "kit"
    shutil.copytree(ROOT / "hpt_kit", copy / "hpt_kit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    spec = copy / "hpt_kit" / "core" / "spec.py"
    spec.write_text(spec.read_text() + "\n\ndef _upward():\n    from hpt_kit.train.loop import train  # noqa: F401\n")
    out = _lint(copy)
    assert out.returncode != 0
    assert "hpt_kit.core is not allowed to import hpt_kit.train" in out.stdout
