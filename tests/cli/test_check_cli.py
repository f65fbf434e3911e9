"""`hpt-kit check`: the contract of an installed plugin, found through its entry point."""

import json

from tests.cli.conftest import hpt


def test_check_passes_an_installed_plugin_and_reports_what_it_saw(plugin_env):
    run = hpt(plugin_env, "check", "drift-arm", "--episodes", "3", "--json")
    assert run.returncode == 0, run.stderr
    (report,) = json.loads(run.stdout)["embodiments"]
    assert report["ok"] and report["distribution"] == "hpt-kit-drift"
    assert report["episode_lengths"] == [8, 8, 8] and report["fields"] == {"state": [12], "action": [1]}
    assert report["random_rollouts"] == 2 and report["controller_calls"] == 16  # 2 episodes of 8 steps
    assert report["parallel_rollouts"] is False
    text = hpt(plugin_env, "check", "drift-arm")
    assert text.returncode == 0 and "ok drift-arm (hpt-kit-drift 0.1)" in text.stdout


def test_check_names_the_embodiment_and_the_problem(plugin_env):
    run = hpt({**plugin_env, "DRIFT_BREAK": "nan"}, "check", "drift-arm")
    assert run.returncode == 1
    assert "FAILED drift-arm" in run.stdout and "episode 0" in run.stdout and "state" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_check_of_an_unregistered_name_says_how_to_register(plugin_env):
    run = hpt(plugin_env, "check", "my-arm")
    assert run.returncode == 1
    assert "not registered: my-arm" in run.stderr and "drift-arm" in run.stderr and "pip install -e" in run.stderr


def test_check_asks_an_expert_only_of_a_plugin_that_has_one(plugin_env):
    run = hpt(plugin_env, "check", "drift-arm", "--expert", "5")
    assert run.returncode == 1 and "no expert_rollout" in run.stdout
