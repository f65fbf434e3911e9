"""What a crash, a full disk, a second run or an edited recipe can do to a run directory, and how
``--resume`` answers: repair and continue, or refuse naming the file or key."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from tests.faults.conftest import (
    assert_same_weights,
    hpt,
    leftovers,
    metric_steps,
    start,
    stop,
    wait_for_step,
    weights,
    write_recipe,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def stopped(arm3, tmp_path):
    """A run killed (SIGKILL) after its step-40 checkpoint, before the end."""
    recipe, run = write_recipe(tmp_path / "r.toml", arm3), tmp_path / "run"
    proc = start("pretrain", recipe, "--out", run)
    wait_for_step(proc, run, 45)
    stop(proc, signal.SIGKILL)
    assert (run / "checkpoints" / "step_00000040").is_dir()
    return recipe, run


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(stopped, reference):
    recipe, run = stopped
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-40])  # cut inside the last record
    out = hpt("pretrain", recipe, "--out", run, "--resume")
    assert "metrics.jsonl: dropped its last line" in out.stderr
    assert_same_weights(weights(run), reference)
    assert all(json.loads(line) for line in metrics.read_text().splitlines())


def test_a_damaged_metrics_line_before_the_end_is_an_error_naming_file_and_line(stopped):
    recipe, run = stopped
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[2] = lines[2][:10]
    metrics.write_text("\n".join(lines) + "\n")
    out = hpt("pretrain", recipe, "--out", run, "--resume", check=False)
    assert out.returncode == 1 and f"{metrics}: line 3 is not JSON" in out.stderr and "Traceback" not in out.stderr


def test_a_dangling_latest_resumes_from_the_newest_complete_checkpoint(stopped, reference):
    recipe, run = stopped
    shutil.rmtree(run / "checkpoints" / "step_00000040")  # latest now points at nothing
    out = hpt("pretrain", recipe, "--out", run, "--resume")
    assert "now step_00000030" in out.stderr
    assert_same_weights(weights(run), reference)
    steps = metric_steps(run)
    assert steps == sorted(set(steps)) and steps[0] == 5  # the history before step 30 was kept


@pytest.mark.parametrize("damage", ["truncate", "zero"])
def test_damaged_weights_are_named_and_resume_falls_back(damage, stopped, reference):
    recipe, run = stopped
    target = run / "checkpoints" / "step_00000040" / "model.safetensors"
    size = target.stat().st_size
    target.write_bytes(target.read_bytes()[: size // 2] if damage == "truncate" else bytes(size))
    for command in (("info", target.parent), ("eval", target.parent, "--episodes", 1)):
        out = hpt(*command, check=False)
        assert out.returncode == 1 and str(target) in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = hpt("transfer", "--embodiment", "mujoco-arm4", "--trunk", target.parent, "--out", run.parent / "t", check=False)
    assert out.returncode == 1 and str(target) in out.stderr
    resumed = hpt("pretrain", recipe, "--out", run, "--resume")
    assert "step_00000040" in resumed.stderr and "now step_00000030" in resumed.stderr
    assert_same_weights(weights(run), reference)


def test_two_runs_on_one_directory_the_second_is_refused_naming_the_holder(arm3, tmp_path):
    recipe, run = write_recipe(tmp_path / "r.toml", arm3, steps=400), tmp_path / "run"
    first = start("pretrain", recipe, "--out", run)
    wait_for_step(first, run, 5)
    second = hpt("pretrain", recipe, "--out", run, "--resume", check=False)
    assert second.returncode == 1 and f"run directory {run} is in use by pid {first.pid}" in second.stderr
    stop(first, signal.SIGINT)
    steps = metric_steps(run)
    assert steps == sorted(set(steps))  # one writer only


def test_a_stale_lock_of_a_killed_run_does_not_block(stopped, reference):
    recipe, run = stopped
    assert (run / ".lock").exists()  # SIGKILL left the file (the kernel dropped the lock itself)
    hpt("pretrain", recipe, "--out", run, "--resume")
    assert_same_weights(weights(run), reference)
    assert leftovers(run) == []


@pytest.mark.parametrize(
    "change, key",
    [({"preset": "small"}, "trunk.preset"), ({"seed": 1}, "run.seed"), ({"lr": "5e-4"}, "train.lr")],
)
def test_resume_refuses_a_recipe_change_to_model_or_data_naming_the_keys(change, key, stopped, arm3):
    recipe, run = stopped
    saved = (run / "recipe.toml").read_text()
    changed = write_recipe(run.parent / "changed.toml", arm3, **change)
    out = hpt("pretrain", changed, "--out", run, "--resume", check=False)
    assert out.returncode == 1 and key in out.stderr and "cannot resume" in out.stderr, out.stderr
    assert (run / "recipe.toml").read_text() == saved  # nothing was rewritten


def test_resume_allows_more_steps_and_other_settings_that_keep_model_and_data(stopped, arm3):
    recipe, run = stopped
    longer = write_recipe(run.parent / "longer.toml", arm3, steps=70, keep=5, extra="skip_nonfinite = 2")
    hpt("pretrain", longer, "--out", run, "--resume")
    assert metric_steps(run)[-1] == 70 and "steps = 70" in (run / "recipe.toml").read_text()


def test_resume_refuses_a_dataset_with_other_episodes(stopped, tmp_path):
    recipe, run = stopped
    other = tmp_path / "other.zarr"
    hpt("convert", "mujoco-arm3", "--episodes", 8, "--out", other)
    out = hpt("pretrain", write_recipe(tmp_path / "o.toml", other), "--out", run, "--resume", check=False)
    assert out.returncode == 1 and "holds 8 episodes" in out.stderr and str(other) in out.stderr


def test_seeds_0_and_1_on_one_directory_do_not_mix(arm3, tmp_path):
    run = tmp_path / "run"
    hpt("pretrain", write_recipe(tmp_path / "s0.toml", arm3, seed=0), "--out", run)
    out = hpt("pretrain", write_recipe(tmp_path / "s1.toml", arm3, seed=1), "--out", run, check=False)
    assert out.returncode == 1 and "pass --resume" in out.stderr
    out = hpt("pretrain", write_recipe(tmp_path / "s1.toml", arm3, seed=1), "--out", run, "--resume", check=False)
    assert out.returncode == 1 and "run.seed" in out.stderr
    assert 'seed = 0' in (run / "recipe.toml").read_text()


def test_a_half_pruned_folder_is_removed_on_resume(stopped, reference):
    recipe, run = stopped
    (run / "checkpoints" / "step_00000020" / "checkpoint.json").unlink()  # what an interrupted rmtree leaves
    out = hpt("pretrain", recipe, "--out", run, "--resume")
    assert "removed step_00000020" in out.stderr
    assert_same_weights(weights(run), reference)
    assert leftovers(run) == []
