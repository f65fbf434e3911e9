"""The onnx backend: the exported graph is ``HPT.predict`` (to 1e-5 of the action range), at any batch,
in closed loop, from a file read without the torch model, and from ``hpt-kit export --onnx``."""

import dataclasses
import json
import subprocess

import numpy as np
import pytest
import torch

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import (
    ActionSpec,
    EmbodimentData,
    HeadSpec,
    ImageFeatureSpec,
    LanguageSpec,
    ObservationSpec,
    StemSpec,
)
from hpt_kit.models.hpt import HPT
from hpt_kit.policy import Policy
from hpt_kit.policy.onnx import OPSET, ExportError, OnnxFileError, OnnxPredictor, example_inputs
from tests.conftest import HPT_KIT, image_spec, image_stats, make_toy

pytest.importorskip("onnxruntime")

TEXTS = ("pick up the red block", "open the drawer")


def rich_spec(head: str = "mlp") -> EmbodimentData:
    """State, two views of precomputed image features and a hashed instruction, history 2, chunk 3."""
    return EmbodimentData(
        name="rich",
        observation=ObservationSpec(
            5,
            image_features=ImageFeatureSpec(("front", "wrist"), 6, 16),
            language=LanguageSpec(3, 64, "hash-ngram"),
        ),
        action=ActionSpec(2, (-2.0, 0.0), (1.0, 4.0), 10.0),
        stems=(
            StemSpec("state", hidden=(32,), num_tokens=4, num_heads=4),
            StemSpec("image_features", kind="resnet", hidden=(32,), num_tokens=2, num_heads=4, options={"weights": None}),
            StemSpec("language", hidden=(32,), num_tokens=2, num_heads=4),
        ),
        head=HeadSpec(kind=head, hidden=(32,), action_horizon=3),
        observation_horizon=2,
    )


def stats_for(spec: EmbodimentData, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    S = spec.observation.state_dim
    return {
        "state": {"mean": rng.normal(size=S).tolist(), "std": rng.uniform(0.5, 2, S).tolist()},
        "action": {"min": list(spec.action.low), "max": list(spec.action.high)},
    }


def build(spec: EmbodimentData) -> HPT:
    torch.manual_seed(0)
    return HPT(TrunkConfig(32, 2, 4), {spec.name: spec}, {spec.name: stats_for(spec)}, load_registry(load_entrypoints=False))


def assert_same_actions(got, want, spec: EmbodimentData) -> None:
    """Equal to 1e-5 in normalised units: the difference per unit of each dimension's action range."""
    span = np.subtract(spec.action.high, spec.action.low)
    np.testing.assert_allclose(np.asarray(got) / span, np.asarray(want) / span, rtol=0, atol=1e-5)


def torch_chunk(model: HPT, name: str, history: dict) -> np.ndarray:
    with torch.inference_mode():
        return model.predict(name, {k: torch.as_tensor(v) for k, v in history.items()}).numpy()


@pytest.mark.parametrize("spec", [make_toy(), rich_spec()], ids=["state-only", "features+language"])
@pytest.mark.parametrize("batch", [1, 4])
def test_the_graph_predicts_what_torch_predicts(spec, batch, one_thread):
    model = build(spec)
    predictor = OnnxPredictor(model, spec.name)  # exported at batch 2: the batch axis is dynamic
    history = example_inputs(spec, batch=batch, seed=batch)
    got = predictor(history)
    assert got.shape == (batch, spec.action_horizon, spec.action.dim) and got.dtype == np.float32
    assert_same_actions(got, torch_chunk(model, spec.name, history), spec)
    assert predictor.path is None and model.training  # a temporary file, gone; the model's mode kept


def _observations(spec: EmbodimentData, steps: int) -> list[dict]:
    rng = np.random.default_rng(1)
    shapes = spec.observation.field_shapes()
    out = []
    for t in range(steps):
        obs = {"state": rng.normal(size=shapes["state"]).astype(np.float32)}
        if "image_features" in shapes:
            obs["image_features"] = rng.normal(size=shapes["image_features"]).astype(np.float32)
        if spec.observation.language is not None:
            obs["instruction"] = TEXTS[t // 4 % 2]  # the task changes mid-episode: a new encoding
        out.append(obs)
    return out


@pytest.mark.parametrize("spec", [make_toy(), rich_spec()], ids=["state-only", "features+language"])
@pytest.mark.parametrize(("execute_steps", "ensemble"), [(2, None), (0, 0.1)], ids=["open-loop", "ensembled"])
def test_closed_loop_actions_are_the_torch_backends(spec, execute_steps, ensemble, one_thread):
    model = build(spec)
    policies = [Policy(model, spec.name, execute_steps, ensemble, backend=b) for b in ("torch", "onnx")]
    assert policies[1].backend == "onnx"
    observations = _observations(spec, 9)
    for episode in range(2):
        for p in policies:
            p.reset()
        for obs in observations[episode:]:
            eager, onnx = (p.act(obs) for p in policies)
            assert onnx.shape == (spec.action.dim,)
            assert_same_actions(onnx, eager, spec)


@pytest.mark.parametrize("head", ["gmm", "diffusion", "transformer-decoder"])
def test_the_other_built_in_heads_export_because_they_predict_deterministically(head, one_thread):
    """The gmm head predicts its likeliest mode's mean; diffusion runs DDIM from a fixed noise chunk."""
    spec = rich_spec(head)
    model = build(spec)
    history = example_inputs(spec, batch=3, seed=7)
    assert_same_actions(OnnxPredictor(model, spec.name)(history), torch_chunk(model, spec.name, history), spec)


def test_raw_frames_go_through_the_resnet_stem_in_the_graph(one_thread):
    """uint8 frames in; the encoder (eval-mode batch norm) is part of the graph."""
    spec = image_spec()
    torch.manual_seed(0)
    model = HPT(TrunkConfig(32, 1, 4), {spec.name: spec}, {spec.name: image_stats()}, load_registry(load_entrypoints=False))
    predictor = OnnxPredictor(model, spec.name)
    assert predictor.inputs == {"state": np.float32, "image": np.uint8}
    history = example_inputs(spec, batch=2, seed=4)
    model.eval()  # the reference in the exported (eval) mode: batch norm on its running statistics
    assert_same_actions(predictor(history), torch_chunk(model, spec.name, history), spec)
    with pytest.raises(TypeError, match="'image' must be uint8"):
        predictor({**history, "image": history["image"].astype(np.float32)})


def test_an_operator_without_onnx_form_is_refused_naming_the_parts():
    """The resnet stem's ``resize`` (antialiased bilinear) has no ONNX form in the TorchScript exporter."""
    spec = image_spec(resize=40)
    torch.manual_seed(0)
    model = HPT(TrunkConfig(32, 1, 4), {spec.name: spec}, {spec.name: image_stats()}, load_registry(load_entrypoints=False))
    with pytest.raises(ExportError, match=r"'cam' \(stems mlp on state, resnet on image; head 'mlp'\) does not export.*upsample"):
        OnnxPredictor(model, spec.name)


class _SamplingHead(torch.nn.Module):
    def __init__(self, spec, width, action_dim):
        super().__init__()
        self.shape = (spec.action_horizon, action_dim)

    def loss(self, features, actions):
        return features.mean()

    def predict(self, features):
        return torch.randn(features.shape[0], *self.shape)


class _FrozenBatchHead(_SamplingHead):
    def __init__(self, spec, width, action_dim):
        super().__init__(spec, width, action_dim)
        self.out = torch.nn.Linear(width, spec.action_horizon * action_dim)

    def predict(self, features):
        batch = int(features.shape[0])  # a Python int: the trace keeps the traced batch size
        return torch.tanh(self.out(features.mean(dim=1))).reshape(batch, *self.shape)


class _UntraceablePlugin:
    @staticmethod
    def hpt_register_heads(registry):
        registry.add("sampler", _SamplingHead)
        registry.add("frozen-batch", _FrozenBatchHead)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("sampler", "head 'sampler' of embodiment 'toy' samples at prediction"),
     ("frozen-batch", "graph of head 'frozen-batch' .* does not run at batch 1")],
)
def test_a_head_without_a_faithful_graph_is_refused_naming_its_kind(kind, message):
    from hpt_kit.hookspecs import hookimpl

    hookimpl(_UntraceablePlugin.hpt_register_heads)
    components = load_registry(load_entrypoints=False, extra_plugins=[("untraceable", _UntraceablePlugin)])
    spec = dataclasses.replace(make_toy(), head=HeadSpec(kind=kind))
    model = HPT(TrunkConfig(32, 1, 4), {spec.name: spec}, {spec.name: stats_for(spec)}, components)
    with pytest.raises(ExportError, match=message):
        OnnxPredictor(model, spec.name)
    with pytest.raises(ExportError, match=f"'{kind}'"):
        Policy(model, spec.name, backend="onnx")


def test_an_exported_file_loads_without_the_model_and_describes_itself(tmp_path):
    spec = rich_spec()
    model = build(spec)
    path = tmp_path / "out" / "rich.onnx"
    OnnxPredictor(model, spec.name, path=path)
    loaded = OnnxPredictor.load(path)
    assert loaded.path == path and loaded.embodiment == "rich" and loaded.spec == spec
    assert list(loaded.inputs) == ["state", "image_features", "language"]
    assert loaded.metadata["hpt_kit.format"] == "hpt-kit-onnx" and loaded.metadata["hpt_kit.format_version"] == "1"
    history = example_inputs(spec, batch=2, seed=3)
    tensors = {k: torch.from_numpy(v) for k, v in history.items()}  # torch tensors are taken as well
    assert_same_actions(loaded(tensors), torch_chunk(model, spec.name, history), spec)
    with pytest.raises(KeyError, match="needs 'language'"):
        loaded({k: v for k, v in history.items() if k != "language"})
    assert [p.name for p in path.parent.iterdir()] == ["rich.onnx"]  # written atomically, nothing left over
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("state", "action")]
    graph = helper.make_graph([helper.make_node("Identity", ["state"], ["action"])], "other", io[:1], io[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8), tmp_path / "other.onnx")
    with pytest.raises(OnnxFileError, match="not an hpt-kit ONNX export"):
        OnnxPredictor.load(tmp_path / "other.onnx")


def test_backends_are_checked(toy):
    model = build(toy)
    with pytest.raises(ValueError, match="unknown backend 'tflite'; known: torch, onnx"):
        Policy(model, toy.name, backend="tflite")
    with pytest.raises(ValueError, match="compile=True is for the torch backend"):
        Policy(model, toy.name, backend="onnx", compile=True)
    with pytest.raises(ValueError, match="runs on the CPU"):
        Policy(model, toy.name, backend="onnx", device="meta")


@pytest.mark.slow
def test_export_command_writes_graphs_that_onnxruntime_alone_runs(tmp_path):
    """``hpt-kit export --onnx`` on a checkpoint; the files read back with onnxruntime and numpy only."""
    import onnxruntime as ort

    from hpt_kit.weights.checkpoint import describe, write_checkpoint_folder

    specs = {s.name: s for s in (make_toy(), rich_spec())}
    torch.manual_seed(0)
    model = HPT(TrunkConfig(32, 2, 4), specs, {n: stats_for(s) for n, s in specs.items()}, load_registry(load_entrypoints=False))
    write_checkpoint_folder(tmp_path / "ckpt", model, describe(model, step=0))

    def export(*args):
        return subprocess.run([HPT_KIT, "export", str(tmp_path / "ckpt"), *map(str, args)], capture_output=True, text=True)

    out = export(tmp_path / "graphs", "--onnx")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "graphs").iterdir()) == ["rich.onnx", "toy.onnx"]
    session = ort.InferenceSession(str(tmp_path / "graphs" / "rich.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["hpt_kit.embodiment"] == "rich" and json.loads(meta["hpt_kit.spec"])["name"] == "rich"
    assert [i.name for i in session.get_inputs()] == json.loads(meta["hpt_kit.inputs"])

    policy = Policy.from_checkpoint(tmp_path / "ckpt", "rich", execute_steps=1)
    for obs in _observations(specs["rich"], 3):
        action = policy.act(obs)
        history = {k: v.numpy() for k, v in policy.history.items()}
        (chunk,) = session.run(["action"], history)
        assert_same_actions(chunk[0, 0], action, specs["rich"])

    one = export(tmp_path / "one", "--onnx", "--embodiment", "toy")
    assert one.returncode == 0 and [p.name for p in (tmp_path / "one").iterdir()] == ["toy.onnx"]
    again = export(tmp_path / "one", "--onnx", "--embodiment", "toy")
    assert again.returncode == 1 and "already exists" in again.stderr
    unknown = export(tmp_path / "two", "--onnx", "--embodiment", "nope")
    assert unknown.returncode == 1 and "no embodiment 'nope'" in unknown.stderr and "rich" in unknown.stderr


def test_int8_backend_is_quantised_and_close_to_fp32_but_opt_in(tmp_path, one_thread):
    import onnx

    from hpt_kit.policy.onnx import INT8_BOUND

    spec = rich_spec()
    model = build(spec)
    predictor = OnnxPredictor(model, spec.name, path=tmp_path / "rich.onnx", int8=True)
    graph = onnx.load(str(tmp_path / "rich.onnx"))
    assert "MatMulInteger" in {n.op_type for n in graph.graph.node}  # int8 products, not fp32 ones
    assert predictor.metadata["hpt_kit.weights"] == "int8" and predictor.embodiment == spec.name
    history = example_inputs(spec, batch=3, seed=7)
    span = np.subtract(spec.action.high, spec.action.low)  # the bound is per unit of each dimension's range
    got, want = predictor(history), torch_chunk(model, spec.name, history)
    assert 0 < (np.abs(got - want) / span).max() <= INT8_BOUND
    policies = [Policy(model, spec.name, execute_steps=1, backend=b) for b in ("torch", "onnx-int8")]
    for obs in _observations(spec, 4):
        eager, int8 = (p.act(obs) for p in policies)
        assert (np.abs(int8 - eager) / span).max() <= INT8_BOUND
    with pytest.raises(ValueError, match="compile=True is for the torch backend; the onnx-int8"):
        Policy(model, spec.name, backend="onnx-int8", compile=True)
