import subprocess

import pytest

from hpt_kit.core.recipe import RecipeError, load_recipe, parse_recipe, recipe_to_toml
from tests.conftest import HPT_KIT, ROOT


def _write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


GOOD = '[trunk]\npreset = "tiny"\n[[datasets]]\nembodiment = "toy"\n[train]\nsteps = 5\n'


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("steps = 5", "stepz = 5"), r"r\.toml: train\.stepz: unknown key \(known: steps, "),
        (GOOD.replace("steps = 5", 'steps = "five"'), r"r\.toml: train\.steps: must be an integer, got 'five'"),
        (GOOD.replace("steps = 5", "steps = 5.5"), r"train\.steps: must be an integer"),
        (GOOD.replace('preset = "tiny"', 'preset = "enormous"'), r"trunk: unknown preset 'enormous'; known: tiny, small"),
        ('[trunk]\npreset = "tiny"\n', r"r\.toml: datasets: required key is missing"),
        (GOOD.replace('embodiment = "toy"', 'weight = 2.0'), r"datasets\[0\]\.embodiment: required key is missing"),
        (GOOD + "[optimizer]\nlr = 1\n", r"optimizer: unknown section"),
        (GOOD + '[[datasets]]\nembodiment = "toy"\n', r"embodiment 'toy' is listed twice"),
        ("datasets = [", r"r\.toml: not valid TOML"),
    ],
)
def test_bad_recipes_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_write(tmp_path, text))


def test_good_recipe_round_trips_through_toml(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD))
    assert recipe.trunk.preset == "tiny" and recipe.train.steps == 5 and recipe.datasets[0].weight == 1.0
    again = parse_recipe(__import__("tomllib").loads(recipe_to_toml(recipe)), "x")
    assert again.to_dict() == recipe.to_dict()


def test_shipped_recipes_validate_and_name_installed_embodiments():
    from hpt_kit_rlds.openx import load_catalogue

    from hpt_kit.core.registry import load_registry
    from hpt_kit.lab.experiment import load_experiment

    registry = load_registry()
    catalogue = load_catalogue()
    paths = sorted((ROOT / "recipes").glob("*.toml"))
    assert {"default.toml", "scaled.toml", "smoke.toml", "demo.toml", "experiment.toml"} <= {p.name for p in paths}
    for path in paths:
        if "[experiment]" in path.read_text():
            experiment = load_experiment(path)
            names = [t.embodiment for t in experiment.targets] + [d.embodiment for d in load_recipe(experiment.pretrain).datasets]
        elif "[scaling]" in path.read_text():
            from hpt_kit.lab.scaling import load_scaling, points

            study = load_scaling(path)
            points(study, load_recipe(study.pretrain))  # every point within what the recipe gives
            names = [d.embodiment for d in load_recipe(study.pretrain).datasets]
        else:
            recipe = load_recipe(path)
            # Imported datasets (convert = false) are embodiments once imported: an Open-X one must be
            # a catalogue entry that `hpt-kit openx import` makes.
            imported = [d.embodiment for d in recipe.datasets if not d.convert]
            for name in imported:
                assert catalogue.entry(name).embodiment == name, f"{path.name}: {name}"
            names = [d.embodiment for d in recipe.datasets if d.convert]
        for name in names:
            registry.embodiment(name)  # raises, listing the known ones, if not installed


def test_scaled_recipe_builds_its_xlarge_model():
    import torch

    from hpt_kit.core.presets import trunk_config
    from hpt_kit.core.registry import load_registry
    from hpt_kit.models.hpt import HPT

    recipe = load_recipe(ROOT / "recipes" / "scaled.toml")
    registry = load_registry()
    specs = {d.embodiment: registry.embodiment(d.embodiment) for d in recipe.datasets}
    stats = {
        n: {"state": {"mean": [0.0] * s.observation.state_dim, "std": [1.0] * s.observation.state_dim},
            "action": {"min": [-1.0] * s.action.dim, "max": [1.0] * s.action.dim}}
        for n, s in specs.items()
    }
    with torch.device("meta"):
        model = HPT(trunk_config(recipe.trunk.preset), specs, stats, registry)
    assert sum(p.numel() for p in model.trunk.parameters()) == 226_861_056
    assert len(model.heads) == len(recipe.datasets) == 9


def test_cli_reports_a_bad_recipe_in_one_line(tmp_path):
    path = _write(tmp_path, GOOD.replace("steps = 5", "stepz = 5"))
    out = subprocess.run([HPT_KIT, "pretrain", str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.stepz: unknown key" in lines[0] and str(path) in lines[0]
    assert "Traceback" not in out.stderr


def test_changed_settings_sorts_resumable_changes_from_refused_ones():
    import dataclasses

    from hpt_kit.core.recipe import changed_settings, load_recipe

    base = load_recipe(ROOT / "recipes" / "smoke.toml")
    saved = base.to_dict()
    del saved["train"]["skip_nonfinite"]  # a checkpoint of an older kit: the missing key is its default
    assert changed_settings(saved, base) == ([], [])
    changed = dataclasses.replace(
        base,
        trunk=dataclasses.replace(base.trunk, preset="small"),
        train=dataclasses.replace(base.train, steps=80, lr=1e-4, log_every=5),
        datasets=(dataclasses.replace(base.datasets[0], path="elsewhere.zarr", max_episodes=3),),
    )
    refused, allowed = changed_settings(saved, changed)
    assert refused == ["datasets[0].max_episodes", "train.lr", "trunk.preset"]
    assert allowed == ["datasets[0].path", "train.log_every", "train.steps"]
