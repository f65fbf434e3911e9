"""The Open-X catalogue: loading and its checks, each entry imported from a small source with its
dataset's TFDS layout, a source that differs from its entry, and the ``hpt-kit openx`` commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hpt_kit.core.importer import ImportSourceError
from hpt_kit.data.importing import ImportOptions, import_dataset
from hpt_kit.data.store import Dataset
from openx_fixtures import LAYOUTS, episode_record, write_openx

from hpt_kit_rlds import openx

CATALOGUE = openx.load_catalogue()


def _options(entry: openx.Entry) -> ImportOptions:
    return ImportOptions(name=entry.embodiment, state=(openx.STATE_KEY,), action=openx.ACTION_KEY, image_size=32)


def test_catalogue_covers_the_layouts_and_cites_every_field():
    assert {e.name for e in CATALOGUE.entries} == set(LAYOUTS)
    for e in CATALOGUE.entries:
        assert e.published == f"gs://gresearch/robotics/{e.name}/{e.version}"
        assert set(e.cite.values()) <= set(CATALOGUE.sources)
        assert all(u.split(":", 1)[0] for u in e.unresolved)
        assert e.action_dim >= 1 and e.control_hz > 0
    assert CATALOGUE.entry("openx-taco-play").name == "taco_play"
    with pytest.raises(openx.CatalogueError, match="no Open-X entry 'fractal'.*roboturk"):
        CATALOGUE.entry("fractal")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace('name = "viola"', 'name = "viola"\ncolour = "red"'), r"\(viola\): unknown key\(s\) colour"),
        (lambda s: s.replace('name = "viola"', 'name = "toto"'), r"name 'toto' already used"),
        (lambda s: s.replace('name = "viola"', 'name = "viola"\npaper_weight = 0'), r"\(viola\): paper_weight must be a number > 0"),
        (lambda s: s.replace('control_hz = "lerobot_openx", episodes = "tfds", features = "tfds", robot = "tfds" }\n\n[[dataset]]\nname = "toto"',
                             'episodes = "tfds", features = "tfds", robot = "tfds" }\n\n[[dataset]]\nname = "toto"'),
         r"\(viola\): field 'control_hz' cites no source"),
    ],
)
def test_catalogue_errors_name_the_entry(tmp_path, edit, message):
    text = openx.CATALOGUE.read_text()
    changed = edit(text)
    assert changed != text
    path = tmp_path / "openx.toml"
    path.write_text(changed)
    with pytest.raises(openx.CatalogueError, match=message):
        openx.load_catalogue(path)


@pytest.mark.parametrize("name", [e.name for e in CATALOGUE.entries])
def test_entry_imports_its_layout(tmp_path, name):
    entry = CATALOGUE.entry(name)
    source = write_openx(tmp_path / "src", name, episodes=3, steps=5)
    out = import_dataset(openx.OpenXSource(entry), str(source), tmp_path / f"{name}.zarr", _options(entry))
    ds = Dataset(out)
    spec = ds.spec
    assert (ds.num_episodes, ds.num_steps) == (3, 15)
    assert (spec.observation.state_dim, spec.action.dim) == (entry.state_dim, entry.action_dim)
    assert spec.action.control_hz == entry.control_hz
    assert spec.observation.image.views == tuple(k.rsplit("/", 1)[-1] for k in entry.cameras)
    assert spec.observation.language is not None  # the instruction, encoded by the kit's text encoder
    assert ("state" in [s.modality for s in spec.stems]) == bool(entry.state)
    record = episode_record(LAYOUTS[name], 1, 5)
    expected = np.concatenate([np.asarray(record[f"steps/{k}"][0], np.float32).reshape(5, -1) for k in entry.action], axis=1)
    np.testing.assert_allclose(ds.episode(1)["action"], expected, rtol=1e-6)
    note = ds.notes["import"]
    assert note["format"] == "openx" and note["extra"]["openx"]["name"] == name
    assert note["extra"]["openx"]["action"] == list(entry.action)


def test_several_cameras_of_different_sizes_share_one_size(tmp_path):
    entry = CATALOGUE.entry("taco_play")
    assert {entry.features[k][:2] for k in entry.cameras} == {(150, 200), (84, 84)}
    source = write_openx(tmp_path / "src", "taco_play", episodes=2, steps=4)
    ds = Dataset(import_dataset(openx.OpenXSource(entry), str(source), tmp_path / "t.zarr", _options(entry)))
    assert ds.episode(0)["image"].shape == (4, 2, 32, 32, 3)


def test_a_dataset_without_state_imports_with_a_state_free_spec(tmp_path):
    import dataclasses

    from hpt_kit.core.spec import Embodiment, StemSpec, spec_problems

    entry = CATALOGUE.entry("roboturk")
    assert entry.state == () and entry.action_dim == 7
    source = write_openx(tmp_path / "src", "roboturk", episodes=2, steps=3)
    ds = Dataset(import_dataset(openx.OpenXSource(entry), str(source), tmp_path / "r.zarr", _options(entry)))
    assert ds.spec.observation.state_dim == 0 and [s.modality for s in ds.spec.stems] == ["image", "language"]
    episode = ds.episode(1)
    assert episode["state"].shape == (3, 0) and episode["action"].shape == (3, 7)
    assert ds.stats["state"] == {"mean": [], "std": []} and len(ds.stats["action"]["min"]) == 7
    reopened = Dataset(ds.path)  # the zero-width state array holds no chunk files; opening checks chunks
    assert reopened.num_steps == 6
    from hpt_kit.data.view import view_episode

    assert view_episode(ds, 0, tmp_path / "ep.png").stat().st_size > 0  # the action curves alone
    with_state_stem = dataclasses.replace(ds.spec, stems=(StemSpec("state"), *ds.spec.stems))
    emb = Embodiment(**{f.name: getattr(with_state_stem, f.name) for f in dataclasses.fields(with_state_stem)},
                     convert_dataset=lambda **_: iter(()), rollout=lambda *_: None)
    assert spec_problems(emb) == ["stem for modality 'state' but the observation offers ['image', 'language']"]


@pytest.mark.parametrize(
    "path, shape, message",
    [
        (("observation", "rgb_static"), ("image", (160, 200, 3)), r"'observation/rgb_static' has shape \[160, 200, 3\], the catalogue declares \[150, 200, 3\]"),
        (("observation", "natural_language_embedding"), ("tensor", "float32", (768,)),
         r"'observation/natural_language_embedding' has shape \[768\], the catalogue declares \[512\]"),
    ],
)
def test_a_source_that_differs_from_its_entry_names_key_and_shapes(tmp_path, path, shape, message):
    layout = json.loads(json.dumps(LAYOUTS["taco_play"]))  # a deep copy (tuples become lists)
    layout[path[0]][path[1]] = shape
    source = write_openx(tmp_path / "src", "taco_play", episodes=1, steps=3, layout=layout)
    entry = CATALOGUE.entry("taco_play")
    with pytest.raises(ImportSourceError, match=message):
        import_dataset(openx.OpenXSource(entry), str(source), tmp_path / "t.zarr", _options(entry))
    del layout[path[0]][path[1]]
    source = write_openx(tmp_path / "src2", "taco_play", episodes=1, steps=3, layout=layout)
    with pytest.raises(ImportSourceError, match=f"key '{'/'.join(path)}' is missing"):
        openx.check_source(entry, source)


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("hpt-kit")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=240)


def test_cli_import_and_list(tmp_path):
    env = {**os.environ, "HPT_KIT_DATA": str(tmp_path / "data")}
    source = write_openx(tmp_path / "src", "viola", episodes=2, steps=4)
    done = _cli("openx", "import", "viola", str(source), "--image-size", "32", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["embodiment"] == "openx-viola" and (result["state_dim"], result["action_dim"]) == (8, 7)
    assert result["control_hz"] == 20.0 and result["notes"]["import"]["extra"]["openx"]["version"] == "0.1.0"
    listed = _cli("openx", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)["datasets"]}
    assert rows["viola"]["imported"] and not rows["taco_play"]["imported"]
    assert rows["roboturk"]["state_dim"] == 0 and rows["toto"]["episodes"] is None
    write_openx(tmp_path / "src", "toto", episodes=1, steps=3)
    every = _cli("openx", "import-all", str(tmp_path / "src"), "--image-size", "16", "--json", env=env)
    assert every.returncode == 0, every.stderr
    outcome = json.loads(every.stdout.strip().splitlines()[-1])
    assert outcome["viola"].startswith("already imported") and outcome["toto"].startswith("imported")
    assert outcome["roboturk"].startswith("skipped: no ")  # not copied under ROOT; no state is no reason to skip
    assert outcome["taco_play"].startswith("skipped: no ") and "gsutil -m cp -r gs://gresearch/robotics/taco_play/0.1.0" in outcome["taco_play"]
    bad = _cli("openx", "import", "fractal", str(source), env=env)
    assert bad.returncode == 1 and re.search(r"no Open-X entry 'fractal'", bad.stderr) and "Traceback" not in bad.stderr


def test_plan_of_a_recipe_over_an_imported_and_a_missing_dataset(tmp_path):
    from hpt_kit.data.sampler import split_episodes

    data = tmp_path / "data"
    entry = CATALOGUE.entry("viola")
    source = write_openx(tmp_path / "src", "viola", episodes=4, steps=5)
    import_dataset(openx.OpenXSource(entry), str(source), data / "openx-viola.zarr", _options(entry))
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[run]\nname = "p"\n[trunk]\npreset = "tiny"\n'
        '[[datasets]]\nembodiment = "openx-viola"\nweight = 3.0\nconvert = false\n'
        '[[datasets]]\nembodiment = "mujoco-arm3"\nweight = 1.0\nepisodes = 7\n'
        "[train]\nsteps = 50\nbatch_size = 8\nval_fraction = 0.25\nstream_memory_mb = 64\n"
    )
    env = {**os.environ, "HPT_KIT_DATA": str(data)}
    done = _cli("pretrain", str(recipe), "--plan", "--json", "--samples-per-s", "100", "--ranks", "2", env=env)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    viola, arm3 = plan["datasets"]
    train_eps, _ = split_episodes(4, 0.25, 0)
    assert (viola["present"], viola["episodes"], viola["steps"], viola["train_windows"]) == (True, 4, 20, 5 * len(train_eps))
    assert viola["tokens_per_sample"] == openx.tokens_per_sample(entry) == 16 + 2 * 16 + 16
    assert viola["share"] == 0.75 and viola["samples"] == 300 and viola["tokens"] == 300 * 64
    assert viola["epochs"] == pytest.approx(300 / viola["train_windows"])
    assert viola["disk_bytes"] > 0 and viola["memory_bytes"] > 20 * 2 * 32 * 32 * 3  # two 32x32 views per step
    assert not arm3["present"] and arm3["missing"]["command"] == "hpt-kit convert mujoco-arm3 --episodes 7"
    assert plan["missing"] == [["mujoco-arm3", "hpt-kit convert mujoco-arm3 --episodes 7"]]
    assert plan["samples"] == 400 and plan["wall_seconds"] == pytest.approx(400 / (100 * 2))
    assert plan["memory_streaming_bytes"] == 2 * 64 * 1024 * 1024 and not plan["stream"]
    assert not (tmp_path / "data" / "mujoco-arm3.zarr").exists()  # nothing converted
    text = _cli("pretrain", str(recipe), "--plan", env=env)
    assert text.returncode == 0 and "hpt-kit convert mujoco-arm3 --episodes 7" in text.stdout
    assert "wall time: unknown (no bench figure for preset 'tiny'" in text.stdout


def test_the_recipe_names_the_catalogue_s_importable_datasets():
    from hpt_kit.core.overrides import load_recipe

    recipe = load_recipe(Path(__file__).parents[3] / "recipes" / "openx-hpt.toml", ())
    openx_entries = [d for d in recipe.datasets if d.embodiment.startswith("openx-")]
    assert {d.embodiment for d in openx_entries} == {e.embodiment for e in CATALOGUE.entries}
    assert all(not d.convert and d.weight == 1.0 for d in openx_entries)
    assert recipe.trunk.preset == "xlarge" and recipe.train.stream


def test_fractal_dict_action_with_the_base_and_its_episode_labels(tmp_path):
    """RT-1's layout: a six-part dict action (terminate_episode, int32, left out), nested per-episode
    labels beside the steps (aspects, attributes), state from the tool pose and the gripper."""
    entry = CATALOGUE.entry("openx-fractal")
    assert (entry.state_dim, entry.action_dim, entry.control_hz) == (8, 10, 3.0)
    source = write_openx(tmp_path / "src", "fractal20220817_data", episodes=2, steps=4)
    features = json.loads((source / "features.json").read_text())["featuresDict"]["features"]
    assert {"aspects", "attributes", "steps"} <= set(features)
    ds = Dataset(import_dataset(openx.OpenXSource(entry), str(source), tmp_path / "f.zarr", _options(entry)))
    record = episode_record(LAYOUTS["fractal20220817_data"], 1, 4)
    state = np.concatenate([np.asarray(record[f"steps/{k}"][0], np.float32).reshape(4, -1) for k in entry.state], axis=1)
    np.testing.assert_allclose(ds.episode(1)["state"], state, rtol=1e-6)
    assert ds.episode(1)["action"].shape == (4, 10) and ds.episode(1)["image"].shape == (4, 1, 32, 32, 3)
