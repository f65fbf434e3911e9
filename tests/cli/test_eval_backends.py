"""``hpt-kit eval RUN --backend A --backend B``: the later backends rolled out on the first one's
episodes, their success rates paired with it, and their actions on the run's held-out episodes."""

from __future__ import annotations

import json

import pytest

from hpt_kit.policy.onnx import INT8_BOUND
from tests.cli.test_eval_settings import hpt_eval, run_dir  # noqa: F401 - run_dir is a fixture

pytest.importorskip("onnxruntime")


def test_backends_are_compared_on_the_same_episodes_and_the_held_out_data(run_dir, monkeypatch):  # noqa: F811
    pytest.importorskip("openvino")
    result = hpt_eval(run_dir, monkeypatch, "--backend", "torch", "--backend", "onnx-int8", "--backend", "openvino", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["backend"] == "torch" and len(out["successes"]) == 3
    compared = out["compared"]
    assert compared["reference"] == "torch" and list(compared["rollouts"]) == ["onnx-int8", "openvino"]
    for r in compared["rollouts"].values():
        assert len(r["successes"]) == 3 and r["minus_reference"]["difference"] == r["success_rate"] - out["success_rate"]
    held = compared["held_out"]
    assert held["windows"] > 0 and held["episodes"] and set(held["first_action_mae"]) == {"torch", "onnx-int8", "openvino"}
    assert held["max_difference"]["openvino"] <= 1e-5  # fp32: the same network
    assert compared["rollouts"]["openvino"]["successes"] == out["successes"]
    assert 0 < held["mean_difference"]["onnx-int8"] <= held["max_difference"]["onnx-int8"] <= 5 * INT8_BOUND  # int8: close, not equal

    table = hpt_eval(run_dir, monkeypatch, "--backend", "onnx", "--backend", "onnx-int8")
    assert table.exit_code == 0, table.output
    assert "HPT (step_00000002, onnx)" in table.stdout
    assert "onnx-int8: success" in table.stdout and "onnx-int8 minus onnx" in table.stdout
    assert "held-out actions (" in table.stdout and "differs from onnx by" in table.stdout


def test_an_unknown_backend_is_refused(run_dir, monkeypatch):  # noqa: F811
    result = hpt_eval(run_dir, monkeypatch, "--backend", "tflite")
    assert result.exit_code == 2 and "tflite" in result.output
