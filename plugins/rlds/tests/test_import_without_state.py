"""``hpt-kit import rlds`` of sources without a state: a source with no state key imports without
``--state`` as a state-free spec (state_dim 0, image and language stems), ``--no-state`` drops the
state of one that has it, and only a selection that leaves nothing to observe is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hpt_kit.data.store import Dataset
from openx_fixtures import write_openx


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("hpt-kit")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, timeout=240)


def test_a_source_without_state_imports_without_state_option(tmp_path):
    env = {**os.environ, "HPT_KIT_DATA": str(tmp_path / "data")}
    source = write_openx(tmp_path / "src", "roboturk", episodes=2, steps=4)  # no numeric observation at all
    out = tmp_path / "r.zarr"
    done = _cli("import", "rlds", source, "--action", "action/world_vector", "--image-size", "16", "--out", out, env=env)
    assert done.returncode == 0, done.stderr
    assert "state none (image and language stems only), action 3, views ['front_rgb']" in done.stdout
    ds = Dataset(out)
    assert (ds.spec.observation.state_dim, ds.spec.action.dim) == (0, 3)
    assert [s.modality for s in ds.spec.stems] == ["image", "language"]
    assert ds.episode(1)["state"].shape == (4, 0) and ds.notes["import"]["state_keys"] == []


def test_no_state_drops_a_state_and_nothing_to_observe_is_one_line(rlds_source, tmp_path):
    from hpt_kit.data.importing import ImportOptions, import_dataset

    from hpt_kit_rlds.importer import RldsImporter

    env = {**os.environ, "HPT_KIT_DATA": str(tmp_path / "data")}
    ds = Dataset(import_dataset(RldsImporter(), str(rlds_source), tmp_path / "n.zarr", ImportOptions(state=(), image_size=16, episodes=2)))
    assert ds.spec.observation.state_dim == 0 and ds.num_episodes == 2  # --no-state: state=()
    assert ds.episode(0)["image"].shape[1:] == (2, 16, 16, 3) and np.isfinite(ds.episode(0)["action"]).all()

    refused = _cli("import", "rlds", rlds_source, "--no-state", "--no-images", "--text-encoder", "none", "--out", tmp_path / "x.zarr", env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.stdout == "" and len(errors) == 1 and "no state key, no camera view and no instruction: the policy would observe nothing" in errors[0]
    assert str(rlds_source) in errors[0] and not (tmp_path / "x.zarr").exists()
    both = _cli("import", "rlds", rlds_source, "--no-state", "--state", "observation/state", env=env)
    assert both.returncode != 0 and "--state and --no-state" in both.stderr
