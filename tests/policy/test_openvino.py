"""The openvino backend: OpenVINO's CPU graph is ``HPT.predict`` to 1e-5 of the action range in fp32,
at batch 1 and in batches, in closed loop, from a file ``export --onnx`` wrote; without the package,
one line naming it and the extra."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hpt_kit.policy import Policy
from hpt_kit.policy.onnx import OnnxPredictor, example_inputs
from tests.conftest import make_toy
from tests.policy.test_onnx import _observations, assert_same_actions, build, rich_spec, torch_chunk

pytest.importorskip("openvino")

from hpt_kit.policy.openvino import OpenVinoPredictor  # noqa: E402 - after the skip


@pytest.mark.parametrize("spec", [make_toy(), rich_spec()], ids=["state-only", "features+language"])
def test_closed_loop_actions_are_the_torch_backends_in_fp32(spec, one_thread):
    model = build(spec)
    policies = [Policy(model, spec.name, execute_steps=1, backend=b) for b in ("torch", "openvino")]
    assert policies[1].backend == "openvino"
    predictor = policies[1]._onnx
    for compiled, _ in predictor._compiled.values():  # not the CPU plugin's bf16 default
        assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    for obs in _observations(spec, 6):
        eager, openvino = (p.act(obs) for p in policies)
        assert openvino.shape == (spec.action.dim,)
        assert_same_actions(openvino, eager, spec)
    history = example_inputs(spec, batch=4, seed=5)  # a server's batch: the dynamic graph
    got = predictor(history)
    assert got.shape == (4, spec.action_horizon, spec.action.dim) and got.dtype == np.float32
    assert_same_actions(got, torch_chunk(model, spec.name, history), spec)


def test_an_exported_file_opens_without_the_model(tmp_path, one_thread):
    spec = rich_spec()
    model = build(spec)
    OnnxPredictor(model, spec.name, path=tmp_path / "rich.onnx")
    loaded = OpenVinoPredictor.load(tmp_path / "rich.onnx", threads=1)
    assert loaded.embodiment == "rich" and loaded.spec == spec and loaded.metadata["hpt_kit.format"] == "hpt-kit-onnx"
    assert list(loaded.inputs) == ["state", "image_features", "language"]
    history = example_inputs(spec, batch=1, seed=3)
    assert_same_actions(loaded({k: torch.from_numpy(v) for k, v in history.items()}), torch_chunk(model, spec.name, history), spec)
    with pytest.raises(KeyError, match="needs 'language'"):
        loaded({k: v for k, v in history.items() if k != "language"})
    with pytest.raises(ValueError, match="compile=True is for the torch backend; the openvino backend has OpenVINO"):
        Policy(model, spec.name, backend="openvino", compile=True)


def test_without_openvino_the_error_names_the_package_and_the_extra():
    code = (
        "import sys; sys.modules['openvino'] = None\n"  # as if it were not installed
        "from hpt_kit.policy import Policy\n"
        "from tests.policy.test_onnx import build\n"
        "from tests.conftest import make_toy\n"
        "try:\n"
        "    Policy(build(make_toy()), 'toy', backend='openvino')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    root = Path(__file__).parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "the openvino backend needs the openvino package: pip install 'hpt-kit[openvino]'"
