"""A third-party embodiment plugin installed for `hpt-kit` subprocesses: a distribution with an entry
point in a folder of its own on PYTHONPATH, as pip would install it."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import HPT_KIT, ROOT

# A real plugin, found through its entry point: a point mass whose state width comes from the
# environment, so one test can change the plugin between commands.
PLUGIN = '''
import os
import numpy as np
from hpt_kit import ActionSpec, Embodiment, HeadSpec, ObservationSpec, RolloutResult, StemSpec, hookimpl

DIM = int(os.environ.get("DRIFT_STATE_DIM", "12"))


def observe(pos, goal):
    s = np.zeros(DIM, np.float32)
    s[:2] = pos, goal
    return s


def convert(request):
    rng = np.random.default_rng(request.seed)
    for _ in range(request.episodes):
        pos, goal = rng.uniform(-1, 1, 2)
        states, actions = [], []
        for _ in range(8):
            a = np.clip([2.0 * (goal - pos)], -1, 1).astype(np.float32)
            states.append(observe(pos, goal))
            actions.append(a)
            pos += 0.25 * a[0]
        if os.environ.get("DRIFT_BREAK") == "nan":  # a plugin bug: a non-finite reading in its data
            states[-1][1] = np.nan
        yield {"state": np.stack(states), "action": np.stack(actions)}


def rollout(controller, request):
    rng = np.random.default_rng(request.seed)
    ok = []
    for _ in range(request.episodes):
        controller.reset()
        pos, goal = rng.uniform(-1, 1, 2)
        for _ in range(8):
            pos += 0.25 * float(np.clip(controller.act({"state": observe(pos, goal)}), -1, 1)[0])
        ok.append(abs(pos - goal) < 0.1)
    return RolloutResult.from_episodes(ok, [0.0] * len(ok))


@hookimpl
def hpt_register_embodiments(registry):
    registry.add(Embodiment(
        name="drift-arm",
        observation=ObservationSpec(state_dim=DIM),
        action=ActionSpec(dim=1, low=(-1.0,), high=(1.0,), control_hz=10.0),
        stems=(StemSpec("state", hidden=(16,), num_tokens=2, num_heads=2),),
        head=HeadSpec(hidden=(16,), action_horizon=2),
        convert_dataset=convert,
        rollout=rollout,
    ))
'''

RECIPE = """
[trunk]
preset = "tiny"

[[datasets]]
embodiment = "drift-arm"
episodes = 6

[train]
steps = 2
batch_size = 4
warmup_steps = 1
val_batches = 1
"""


@pytest.fixture
def plugin_env(tmp_path):
    """The environment of an `hpt-kit` subprocess that finds the plugin `drift-arm` (and not the kit's
    simulators, to start fast)."""
    site = tmp_path / "site"
    (site / "hpt_kit_drift-0.1.dist-info").mkdir(parents=True)
    (site / "hpt_kit_drift.py").write_text(PLUGIN)
    (site / "hpt_kit_drift-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: hpt-kit-drift\nVersion: 0.1\n")
    (site / "hpt_kit_drift-0.1.dist-info" / "entry_points.txt").write_text("[hpt_kit]\ndrift-arm = hpt_kit_drift\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HPT_KIT_DISABLE_PLUGINS": "mujoco,metaworld,robosuite"}


def hpt(env, *args, dim=12):
    """`hpt-kit ARGS` in a subprocess whose plugin reports ``dim``-wide states."""
    return subprocess.run(
        [HPT_KIT, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env={**env, "DRIFT_STATE_DIM": str(dim)}
    )
