"""``hpt-kit eval`` shows every success rate with its Wilson 95% interval, in the table and in JSON."""

from __future__ import annotations

import json

from hpt_kit.core.stats import wilson_interval
from tests.cli.test_eval_settings import hpt_eval, run_dir  # noqa: F401 - the toy run fixture


def test_json_has_the_wilson_interval_of_the_episodes(run_dir, monkeypatch):  # noqa: F811
    result = hpt_eval(run_dir, monkeypatch, "--episodes", "4", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["success_ci95"] == list(wilson_interval(sum(out["successes"]), 4))
    assert out["workers"] == 1 and out["batched"] is False  # the toy gives no rollout_envs: serial


def test_the_table_shows_the_interval(run_dir, monkeypatch):  # noqa: F811
    result = hpt_eval(run_dir, monkeypatch, "--episodes", "4", "--json")
    low, high = json.loads(result.stdout)["success_ci95"]
    table = hpt_eval(run_dir, monkeypatch, "--episodes", "4")
    assert table.exit_code == 0, table.output
    assert "95% interval (Wilson)" in table.stdout and f"{low:.1%} to {high:.1%}" in table.stdout
