"""``hpt-kit eval`` takes its settings from the command line, else the run's recipe ``[eval]``, else
the defaults, and says which it used."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import hpt_kit
from hpt_kit.cli import evaluate
from hpt_kit.core.recipe import EvalSection, parse_recipe
from hpt_kit.core.registry import load_registry
from hpt_kit.train.loop import train
from tests.conftest import make_toy


class ToyPlugin:
    @staticmethod
    @hpt_kit.hookimpl
    def hpt_register_embodiments(registry):
        registry.add(make_toy("toy"))


def toy_registry(**kwargs):
    """Stands in for `load_registry` inside the command: the built-ins and the toy."""
    return load_registry(load_entrypoints=False, extra_plugins=[("toys", ToyPlugin)])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 2-step run of the toy whose recipe plans 3 evaluation episodes from seed 7."""
    out = tmp_path_factory.mktemp("eval-settings")
    recipe = parse_recipe({
        "trunk": {"preset": "custom", "embed_dim": 16, "num_blocks": 1, "num_heads": 2},
        "datasets": [{"embodiment": "toy", "episodes": 6, "path": str(out / "toy.zarr")}],
        "train": {"steps": 2, "batch_size": 8, "warmup_steps": 1, "val_every": 2, "checkpoint_every": 2,
                  "log_every": 1, "val_fraction": 0.2, "device": "cpu"},
        "eval": {"episodes": 3, "seed": 7, "execute_steps": 2},
    }, "test")
    train(recipe, out / "run", toy_registry())
    return out / "run"


def hpt_eval(run_dir, monkeypatch, *options: str) -> typer.testing.Result:
    monkeypatch.setattr("hpt_kit.core.registry.load_registry", toy_registry)
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """hpt-kit, as far as this test needs it."""

    evaluate.register(app)
    return CliRunner().invoke(app, ["eval", str(run_dir), *options])


def test_the_recipe_decides_when_no_option_is_given(run_dir, monkeypatch):
    result = hpt_eval(run_dir, monkeypatch, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["episodes"], out["seed"], out["execute_steps"]) == (3, 7, 2)
    assert len(out["successes"]) == 3
    assert out["settings_from"] == {"episodes": "recipe", "seed": "recipe", "chunks": "recipe"}


def test_options_win_over_the_recipe(run_dir, monkeypatch):
    result = hpt_eval(run_dir, monkeypatch, "--episodes", "2", "--seed", "11", "--execute-steps", "1", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["episodes"], out["seed"], out["execute_steps"]) == (2, 11, 1) and len(out["successes"]) == 2
    assert out["settings_from"] == {"episodes": "option", "seed": "option", "chunks": "option"}


def test_the_table_says_where_the_settings_came_from(run_dir, monkeypatch):
    result = hpt_eval(run_dir, monkeypatch, "--seed", "5")
    assert result.exit_code == 0, result.output
    assert "toy: 3 episodes from seed 5, 2 steps per chunk" in result.stdout
    assert "settings: episodes from recipe, seed from option, chunks from recipe\n" in result.stdout


def test_both_chunk_options_are_refused(run_dir, monkeypatch):
    result = hpt_eval(run_dir, monkeypatch, "--execute-steps", "1", "--temporal-ensemble", "0.1")
    assert result.exit_code == 2 and "not both" in result.output


def test_checkpoints_without_an_eval_section_use_the_defaults():
    settings, sources = evaluate.eval_settings({"recipe": {}}, None, None, None, None)
    assert settings == EvalSection() and set(sources.values()) == {"default"}
    settings, sources = evaluate.eval_settings({}, 4, None, None, 0.01)
    assert (settings.episodes, settings.seed, settings.temporal_ensemble) == (4, 1000, 0.01)
    assert sources == {"episodes": "option", "seed": "default", "chunks": "option"}
