"""The robosuite environment behind an imported robomimic dataset, in this process: observations made
as the import made them (checked against the dataset at the demos' own MuJoCo states), the recorded
actions replayed to the environment's own success, a robosuite 1.4 controller config converted, and
every env_args that cannot be matched refused with its reason."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
from hpt_kit.core.importer import NoEnvironment
from hpt_kit.data.importing import ImportOptions, import_dataset
from hpt_kit.data.store import Dataset

from hpt_kit_robomimic import robosuite_env
from hpt_kit_robomimic.importer import RobomimicImporter

from .expert_file import add_camera_frames, write_expert_demos

pytest.importorskip("hpt_kit_robosuite")


@pytest.fixture(scope="module")
def lift(tmp_path_factory):
    """(file, dataset) for three expert demos of Lift, imported with the default keys."""
    folder = tmp_path_factory.mktemp("lift")
    source = write_expert_demos(folder / "lift.hdf5", episodes=3)
    out = import_dataset(RobomimicImporter(), str(source), folder / "rm-lift.zarr", ImportOptions(name="rm-lift"))
    return source, Dataset(out)


def note_with(ds: Dataset, change) -> dict:
    note = copy.deepcopy(ds.notes["import"])
    change(note)
    return note


def test_observations_are_the_imported_state_and_recorded_actions_lift_the_cube(lift):
    source, ds = lift
    emb = robosuite_env.environment(ds.spec, ds.notes["import"])
    assert emb.name == "rm-lift" and "robosuite Lift" in emb.description
    episodes = robosuite_env.build(robosuite_env.plan(ds.spec, ds.notes["import"]))
    env = episodes.env
    stored = ds.load("state")
    ends = ds.episode_ends
    with h5py.File(source) as f:
        demo = f["data/demo_1"]
        states, actions = demo["states"][()], demo["actions"][()]
    first = int(ends[0])  # demo_1's first row in the dataset
    episodes.reset(np.random.default_rng(0))
    for t in (0, len(states) // 2, len(states) - 1):
        env.sim.set_state_from_flattened(states[t])
        env.sim.forward()
        state = episodes.observe(env._get_observations(force_update=True))["state"]
        # robosuite samples its observables during a step's substeps, possibly one substep (under
        # 2 mm of end-effector travel) before the end; at the reset state they agree exactly.
        np.testing.assert_allclose(state, stored[first + t], rtol=1e-5, atol=1e-6 if t == 0 else 2e-3)
    env.sim.set_state_from_flattened(states[0])
    env.sim.forward()
    success = False
    for action in actions:
        _, _, success = episodes.step(action)
    assert success  # the expert lifted the cube by its last action; replayed from its first state, so does this


def test_a_robosuite_14_controller_config_is_converted_by_robosuite(lift):
    _, ds = lift
    old = {"type": "OSC_POSE", "input_max": 1, "input_min": -1, "output_max": [0.05] * 3 + [0.5] * 3,
           "output_min": [-0.05] * 3 + [-0.5] * 3, "kp": 150, "damping_ratio": 1, "impedance_mode": "fixed",
           "kp_limits": [0, 300], "damping_ratio_limits": [0, 10], "position_limits": None,
           "orientation_limits": None, "uncouple_pos_ori": True, "control_delta": True, "interpolation": None,
           "ramp_ratio": 0.2}  # fmt: skip
    note = note_with(ds, lambda n: n["extra"]["env_args"]["env_kwargs"].update(controller_configs=old))
    setup = robosuite_env.plan(ds.spec, note)
    assert "a robosuite 1.4-style OSC_POSE config converted" in setup.adjusted[0]
    emb = robosuite_env.environment(ds.spec, note)
    assert robosuite_env.build(setup).env.action_dim == 7 and emb.rollout is not None


def test_a_composite_controller_is_refused_by_robosuite_14():
    composite = {"type": "BASIC", "body_parts": {"right": {"type": "OSC_POSE"}}}
    with pytest.raises(NoEnvironment, match="composite config .* robosuite 1.4.1 builds part controllers only"):
        robosuite_env._controller(composite, ["Panda"], "1.4.1")


def _args(note, **changes):
    note["extra"]["env_args"].update(changes)


def _kwargs(note, **changes):
    note["extra"]["env_args"]["env_kwargs"].update(changes)


UNMATCHED = {
    "unknown environment": (lambda n: _args(n, env_name="NutAssemblySquareX"), "has no environment 'NutAssemblySquareX'"),
    "robot not installed": (lambda n: _kwargs(n, robots=["Atlas"]), "has no robot 'Atlas'"),
    "camera not rendered": (lambda n: n.update(views=["obs/birdview_image"]), "camera 'birdview' .* not among env_args camera_names"),
    "not robosuite": (lambda n: _args(n, type=2), "no robosuite environment \\(type 2, robosuite's is 1"),
    "no env_args": (lambda n: n["extra"].pop("env_args"), "records no env_args"),
    "other actions": (lambda n: n.update(action_key="obs/robot0_eef_pos"), "actions were imported from 'obs/robot0_eef_pos'"),
    "state not observed": (lambda n: n.update(state_keys=["rewards"]), "state key 'rewards' is not an observation"),
}


@pytest.mark.parametrize("case", list(UNMATCHED))
def test_env_args_that_cannot_be_matched_name_the_reason(lift, case):
    _, ds = lift
    change, reason = UNMATCHED[case]
    with pytest.raises(NoEnvironment, match=reason):
        robosuite_env.environment(ds.spec, note_with(ds, change))


def test_an_observation_of_another_width_is_refused_when_built(lift):
    _, ds = lift
    note = note_with(ds, lambda n: n.update(state_keys=["obs/robot0_eef_pos", "obs/robot0_joint_pos"]))
    with pytest.raises(NoEnvironment, match="gives 10 state values .* the dataset has 19"):
        robosuite_env.environment(ds.spec, note)


def test_camera_views_are_the_imported_frames(tmp_path):
    """A file with agentview frames made as robomimic makes them, imported at another size: the
    rollout's view at a demo's MuJoCo state is the imported frame (the flipped one is not)."""
    source = add_camera_frames(write_expert_demos(tmp_path / "image.hdf5", episodes=2, seed=1), size=32)
    opts = ImportOptions(name="rm-lift-image", image_size=24)
    ds = Dataset(import_dataset(RobomimicImporter(), str(source), tmp_path / "image.zarr", opts))
    assert ds.notes["import"]["views"] == ["obs/agentview_image"]
    setup = robosuite_env.plan(ds.spec, ds.notes["import"])
    assert (setup.cameras, setup.height, setup.width) == (("agentview",), 24, 24)
    episodes = robosuite_env.build(setup)
    env = episodes.env
    images = ds.load("image")
    with h5py.File(source) as f:
        states = f["data/demo_0/states"][()]
    episodes.reset(np.random.default_rng(0))
    for t in (0, len(states) - 1):
        env.sim.set_state_from_flattened(states[t])
        env.sim.forward()
        seen = episodes.observe(env._get_observations(force_update=True))["image"]
        assert seen.shape == (1, 24, 24, 3) and seen.dtype == np.uint8
        # The same pixels but a few: two environments' renders of one state differ in a handful of
        # pixels (about 1%); a frame left upside down differs in far more.
        differ = np.abs(seen.astype(int) - images[t].astype(int)).max(axis=-1) > 2
        assert differ.mean() < 0.03, f"step {t}: {differ.mean():.1%} of the pixels differ"
        assert (np.abs(seen[:, ::-1].astype(int) - images[t].astype(int)).max(axis=-1) > 2).mean() > 0.2
