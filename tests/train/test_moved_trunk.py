"""A transfer resumed with its trunk at another path (an experiment folder moved or copied): the same
trunk, recognised by the sha256 its checkpoints recorded, lets the run go on; another trunk is still
refused, naming transfer.trunk."""

import dataclasses
import shutil

import pytest

from hpt_kit.core.recipe import RecipeError
from hpt_kit.train.loop import train
from hpt_kit.weights.checkpoint import resolve_checkpoint
from tests.train.test_loop import _recipe, registry  # noqa: F401 - the fixture


def _transfer(trunk, steps):
    recipe = _recipe("toy-b", steps=steps, checkpoint_every=2)
    return dataclasses.replace(recipe, transfer=dataclasses.replace(recipe.transfer, trunk=str(trunk)))


def test_the_same_trunk_at_a_new_path_resumes_and_another_trunk_is_refused(registry, tmp_path):  # noqa: F811
    train(_recipe(steps=2), tmp_path / "pre", registry)
    train(_transfer(tmp_path / "pre", 2), tmp_path / "xfer", registry)
    shutil.move(tmp_path / "pre", tmp_path / "moved")

    train(_transfer(tmp_path / "moved", 4), tmp_path / "xfer", registry, resume=True)
    resumed = resolve_checkpoint(tmp_path / "xfer")
    assert resumed.step == 4 and resumed.description["recipe"]["transfer"]["trunk"] == str(tmp_path / "moved")

    other = _recipe(steps=2)
    train(dataclasses.replace(other, run=dataclasses.replace(other.run, seed=1)), tmp_path / "other", registry)
    with pytest.raises(RecipeError, match=r"the recipe changed transfer\.trunk since its checkpoint at step 4"):
        train(_transfer(tmp_path / "other", 6), tmp_path / "xfer", registry, resume=True)
