"""A third-party plugin changes its state layout after its data was converted: every command that
meets the stale dataset or checkpoint stops with one line naming the field, before any training."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import RECIPE, hpt

pytestmark = pytest.mark.slow


def one_line(out):
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in out.stderr and len(errors) == 1, out.stderr
    return errors[0]


def test_a_changed_plugin_is_caught_by_convert_transfer_and_eval(tmp_path, data_root, plugin_env):
    listing = json.loads(hpt(plugin_env, "list", "--json").stdout)
    assert "drift-arm" in [e["name"] for e in listing["embodiments"]]
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    pre = tmp_path / "pre"
    done = hpt(plugin_env, "pretrain", recipe, "--out", pre)  # converts drift-arm with 12-d states
    assert done.returncode == 0, done.stderr
    dataset = data_root / "drift-arm.zarr"
    assert dataset.is_dir()

    # The plugin now reports 14-d states.
    err = one_line(hpt(plugin_env, "convert", "drift-arm", "--episodes", 2, dim=14))
    assert f"state_dim 14 in the plugin, 12 in dataset {dataset}" in err and "--overwrite" in err

    xfer = tmp_path / "xfer"
    err = one_line(hpt(plugin_env, "transfer", "--embodiment", "drift-arm", "--trunk", pre, "--steps", 2, "--out", xfer, dim=14))
    assert f"embodiment 'drift-arm' changed since dataset {dataset} was made: state_dim 14 in the plugin, 12 in" in err
    assert not (xfer / "checkpoints").exists()  # stopped before any training

    err = one_line(hpt(plugin_env, "eval", pre, "--episodes", 1, dim=14))
    assert "state_dim 14 in the plugin, 12 in checkpoint" in err

    # Unchanged, every command works as before.
    out = hpt(plugin_env, "eval", pre, "--episodes", 1, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["episodes"] == 1, out.stderr
