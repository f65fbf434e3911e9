"""End to end: the real ``hpt-kit import robomimic`` command on a robomimic file, read back with the
kit's Dataset and compared with the file's own values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hpt_kit.data.store import Dataset

from .fixtures import write_robomimic

HPT_KIT = str(Path(sys.executable).with_name("hpt-kit"))


@pytest.mark.slow
def test_hpt_kit_import_writes_the_filtered_demos(tmp_path):
    source = write_robomimic(
        tmp_path / "image.hdf5", episodes=3, steps=[6, 7, 8], cameras=("agentview", "robot0_eye_in_hand")
    )
    out = tmp_path / "x.zarr"
    command = [
        HPT_KIT, "import", "robomimic", str(source),
        "--state", "obs/robot0_eef_pos", "--state", "obs/object", "--action", "actions",
        "--view", "obs/agentview_image", "--image-size", "32", "--option", "filter_key=train",
        "--out", str(out), "--json",
    ]  # fmt: skip
    env = {**os.environ, "HPT_KIT_DATA": str(tmp_path / "data")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["episodes"], report["state_dim"], report["action_dim"]) == (2, 13, 7)

    dataset = Dataset(out)
    assert dataset.num_episodes == 2  # mask/train holds demo_0 and demo_1
    assert dataset.spec.observation.state_dim == 3 + 10 and dataset.spec.action.dim == 7
    state, action, image = dataset.load("state"), dataset.load("action"), dataset.load("image")
    assert state.shape == (13, 13) and action.shape == (13, 7) and image.shape == (13, 1, 32, 32, 3)
    assert np.isfinite(state).all() and np.isfinite(action).all() and image.dtype == np.uint8
    with h5py.File(source) as f:
        demos = [f[f"data/demo_{n}"] for n in (0, 1)]
        expected = np.concatenate(
            [np.concatenate([d["obs/robot0_eef_pos"], d["obs/object"]], 1) for d in demos]
        )
        np.testing.assert_allclose(state, expected, rtol=1e-6)
        np.testing.assert_allclose(action, np.concatenate([d["actions"] for d in demos]), rtol=1e-6)
