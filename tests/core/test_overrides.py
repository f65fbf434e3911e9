"""``--set`` overrides on a recipe's plain data: paths, TOML values, and errors that name the ``--set``."""

import pytest

from hpt_kit.core.overrides import apply_overrides, load_recipe, override_recipe, parse_override
from hpt_kit.core.recipe import DatasetEntry, Recipe, RecipeError

RECIPE = """
[train]
steps = 10

[[datasets]]
embodiment = "a"

[[datasets]]
embodiment = "b"
"""


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    return path


def test_values_are_toml_and_bare_words_strings():
    assert parse_override("train.lr=3e-4").value == 3e-4
    assert parse_override("train.compile=true").value is True
    assert parse_override("datasets[1].head_options={ layers = 2 }").value == {"layers": 2}
    assert parse_override("run.name=arm4").value == "arm4"
    assert parse_override('run.name="with = sign"').value == "with = sign"
    assert parse_override("datasets[1].stem_options.image.resize=64").path == ("datasets", 1, "stem_options", "image", "resize")


def test_applied_to_the_file_before_validation(recipe_file):
    recipe = load_recipe(recipe_file, ["train.lr=2e-3", "datasets[1].weight=2", "eval.episodes=5", "train.lr=1e-3"])
    assert recipe.train.lr == 1e-3 and recipe.train.steps == 10  # later wins, the rest kept
    assert [d.weight for d in recipe.datasets] == [1.0, 2.0]
    assert recipe.eval.episodes == 5  # a table the file lacks is created
    assert apply_overrides({"train": {"lr": 1}}, [parse_override("train.lr=2")]) == {"train": {"lr": 2}}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.lr=fast", "r.toml: train.lr: must be a number, got 'fast' (from --set train.lr=fast)"),
        ("train.lrr=1", "train.lrr: unknown key"),
        ("datasets[1].weight=-1", "datasets[1]: weight must be a finite number > 0, got -1.0 (from --set datasets[1].weight=-1)"),
        ("datasets[2].weight=1", "--set datasets[2].weight=1: datasets has 2 entries (indices 0-1)"),
        ("train.steps.x=1", "--set train.steps.x=1: train.steps is not a table"),
        ("train.lr", "--set train.lr: expected KEY=VALUE"),
        ("train..lr=1", "is not a key"),
        ("nosuch.x=1", "nosuch: unknown section"),
    ],
)
def test_errors_name_the_file_key_and_set(recipe_file, setting, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe_file, [setting])
    assert message in str(err.value) and "--set" in str(err.value)


def test_an_error_elsewhere_is_not_blamed_on_a_set(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[train]\nsteps = "x"\n[[datasets]]\nembodiment = "a"\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["train.lr=1e-3"])
    assert "train.steps: must be an integer" in str(err.value) and "--set" not in str(err.value)


def test_a_recipe_built_in_code_is_validated_again():
    recipe = Recipe(datasets=(DatasetEntry("a"),), source="<command line>")
    assert override_recipe(recipe, ["train.batch_size=8"]).train.batch_size == 8
    with pytest.raises(RecipeError, match=r"<command line>: train.batch_size: must be an integer.*--set"):
        override_recipe(recipe, ["train.batch_size=big"])
