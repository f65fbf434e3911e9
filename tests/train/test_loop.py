"""The training loop on a real toy embodiment: schedule, learning, resume, frozen transfer."""

import dataclasses

import numpy as np
import pytest
import torch

from hpt_kit.core.recipe import RecipeError, TrainSection, parse_recipe
from hpt_kit.core.registry import load_registry
from hpt_kit.models.hpt import HPT
from hpt_kit.policy import Policy
from hpt_kit.train.loop import lr_at, train
from hpt_kit.weights.checkpoint import CheckpointError, resolve_checkpoint
from tests.conftest import make_image_toy, make_toy


class ToyPlugin:
    """Registers two toy embodiments that differ in name only, as a plugin would."""

    @staticmethod
    def hpt_register_embodiments(registry):
        registry.add(make_toy("toy"))
        registry.add(make_toy("toy-b", action_horizon=2, observation_horizon=1))


ToyPlugin.hpt_register_embodiments = __import__("hpt_kit").hookimpl(ToyPlugin.hpt_register_embodiments)


@pytest.fixture
def registry():
    return load_registry(load_entrypoints=False, extra_plugins=[("toys", ToyPlugin)])


def _recipe(embodiment="toy", steps=60, **train):
    cfg = {"steps": steps, "batch_size": 32, "lr": 3e-3, "warmup_steps": 5, "val_every": 20,
           "checkpoint_every": 20, "log_every": 10, "val_fraction": 0.2, **train}
    return parse_recipe({
        "trunk": {"preset": "custom", "embed_dim": 32, "num_blocks": 2, "num_heads": 4},
        "datasets": [{"embodiment": embodiment, "episodes": 30}],
        "train": cfg,
    }, "test")


STREAM = {"stream": True, "stream_memory_mb": 0.003, "stream_blocks": 2, "stream_refresh": 3}  # stretches of 65 steps


@pytest.mark.parametrize("stream", [False, True], ids=["memory", "stream"])
def test_normaliser_statistics_come_from_the_training_episodes_only(registry, tmp_path, stream):
    from hpt_kit.data.sampler import episode_statistics, split_episodes
    from hpt_kit.data.store import Dataset

    recipe = _recipe(steps=2, **(STREAM if stream else {}))
    entry = dataclasses.replace(recipe.datasets[0], max_episodes=10)
    train(dataclasses.replace(recipe, datasets=(entry,)), tmp_path / "run", registry)
    ds = Dataset(tmp_path / "datasets" / "toy.zarr")
    train_eps, _ = split_episodes(10, 0.2, seed=0)
    expected = episode_statistics(ds, {"state": ds.load("state"), "action": ds.load("action")}, train_eps)
    saved = resolve_checkpoint(tmp_path / "run").stats["toy"]
    np.testing.assert_allclose(saved["state"]["mean"], expected["state"]["mean"], rtol=1e-5)
    np.testing.assert_allclose(saved["action"]["max"], expected["action"]["max"], rtol=1e-6)
    assert not np.allclose(saved["state"]["mean"], ds.stats["state"]["mean"])  # not the whole dataset's


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainSection(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_training_learns_and_the_policy_controls(registry, tmp_path):
    result = train(_recipe(steps=300), tmp_path / "run", registry)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    import json

    records = [json.loads(x) for x in lines]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.2 * losses[0], losses
    assert result.val_loss["toy"] < 0.01
    assert (tmp_path / "run" / "recipe.toml").is_file()
    policy = Policy.from_checkpoint(tmp_path / "run", execute_steps=1)
    rollout = make_toy().rollout(policy, __import__("hpt_kit").RolloutRequest(episodes=20, seed=5))
    assert rollout.success_rate >= 0.8


@pytest.mark.parametrize("stream", [False, True], ids=["memory", "stream"])
def test_resume_after_interruption_matches_an_uninterrupted_run(registry, tmp_path, stream):
    # With a 2-step history and history masking, so that its random draws resume exactly too; streamed,
    # the stretches in memory and the one being read are restored as well.
    recipe = _recipe(steps=40, checkpoint_every=10, log_every=1, val_every=10, history_mask=0.5, **(STREAM if stream else {}))
    recipe = dataclasses.replace(recipe, datasets=(dataclasses.replace(recipe.datasets[0], observation_horizon=2),))
    train(recipe, tmp_path / "straight", registry)

    class Stop(Exception):
        pass

    def stop_at_23(record):
        if record.get("step") == 23 and "loss" in record:
            raise Stop

    with pytest.raises(Stop):
        train(recipe, tmp_path / "resumed", registry, on_log=stop_at_23)
    assert resolve_checkpoint(tmp_path / "resumed").step == 20
    with pytest.raises(CheckpointError, match="pass --resume"):
        train(recipe, tmp_path / "resumed", registry)
    train(recipe, tmp_path / "resumed", registry, resume=True)
    import json as _json

    logged = [_json.loads(x)["step"] for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert logged == sorted(set(logged)) and logged[-1] == 40  # steps 21-23 of the stopped run are not repeated
    a = resolve_checkpoint(tmp_path / "straight").tensors()
    b = resolve_checkpoint(tmp_path / "resumed").tensors()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_frozen_transfer_keeps_the_trunk_bit_identical(registry, tmp_path):
    train(_recipe(steps=20), tmp_path / "pre", registry)
    recipe = _recipe("toy-b", steps=30, checkpoint_every=10, keep_checkpoints=5)
    recipe = dataclasses.replace(recipe, transfer=dataclasses.replace(recipe.transfer, trunk=str(tmp_path / "pre")))
    train(recipe, tmp_path / "xfer", registry)
    pre = resolve_checkpoint(tmp_path / "pre").tensors()
    step10 = resolve_checkpoint(tmp_path / "xfer" / "checkpoints" / "step_00000010").tensors()
    final = resolve_checkpoint(tmp_path / "xfer")
    post = final.tensors()
    trunk_keys = [k for k in pre if k.startswith("trunk.")]
    assert trunk_keys and all(torch.equal(pre[k], post[k]) for k in trunk_keys)
    new = [k for k in post if k.startswith(("stems.toy-b.", "heads.toy-b."))]
    assert new and all(k not in pre for k in new)
    changed = [k for k in new if not torch.equal(step10[k], post[k])]
    assert len(changed) == len(new)
    assert final.description["frozen_trunk"] is True
    assert final.description["metrics"]["trainable"] < final.description["metrics"]["trunk"]


def test_fine_tuned_transfer_changes_the_trunk(registry, tmp_path):
    train(_recipe(steps=10), tmp_path / "pre", registry)
    recipe = _recipe("toy-b", steps=10)
    recipe = dataclasses.replace(
        recipe, transfer=dataclasses.replace(recipe.transfer, trunk=str(tmp_path / "pre"), freeze_trunk=False)
    )
    train(recipe, tmp_path / "xfer", registry)
    pre = resolve_checkpoint(tmp_path / "pre").tensors()
    post = resolve_checkpoint(tmp_path / "xfer").tensors()
    assert not torch.equal(pre["trunk.blocks.0.mlp.fc1.weight"], post["trunk.blocks.0.mlp.fc1.weight"])


def _fine_tune(registry, tmp_path, name, trunk_lr_scale, stop_at=None, resume=False):
    recipe = _recipe("toy-b", steps=12, checkpoint_every=6, log_every=1)
    transfer = dataclasses.replace(recipe.transfer, trunk=str(tmp_path / "pre"), freeze_trunk=False, trunk_lr_scale=trunk_lr_scale)
    recipe = dataclasses.replace(recipe, transfer=transfer)

    class Stop(Exception):
        pass

    def stop(record):
        if record.get("step") == stop_at and "loss" in record:
            raise Stop

    try:
        train(recipe, tmp_path / name, registry, resume=resume, on_log=stop if stop_at else None)
    except Stop:
        return None
    return resolve_checkpoint(tmp_path / name).tensors()


def _moved(before, after, prefix):
    return sum(float((after[k] - before[k]).norm()) for k in before if k.startswith(prefix) and k in after)


def test_the_fine_tuned_trunk_learns_at_its_own_rate(registry, tmp_path):
    """transfer.trunk_lr_scale: the trunk's steps shrink by the scale, the new stem's and head's do not;
    a stopped run resumes with the same groups and rates."""
    train(_recipe(steps=10), tmp_path / "pre", registry)
    pre = resolve_checkpoint(tmp_path / "pre").tensors()
    full, slow = _fine_tune(registry, tmp_path, "full", 1.0), _fine_tune(registry, tmp_path, "slow", 0.01)
    assert 0 < _moved(pre, slow, "trunk.") < 0.05 * _moved(pre, full, "trunk.")
    mid = {n: resolve_checkpoint(tmp_path / n / "checkpoints" / "step_00000006").tensors() for n in ("full", "slow")}
    head_full, head_slow = _moved(mid["full"], full, "heads.toy-b."), _moved(mid["slow"], slow, "heads.toy-b.")
    assert head_slow > 0.3 * head_full > 0  # steps 6-12: the head trained at the full rate in both runs
    assert _fine_tune(registry, tmp_path, "resumed", 0.01, stop_at=8) is None
    resumed = _fine_tune(registry, tmp_path, "resumed", 0.01, resume=True)
    for k in slow:
        torch.testing.assert_close(resumed[k], slow[k], rtol=0, atol=1e-6, msg=k)


def test_a_trunk_lr_scale_on_a_frozen_trunk_is_refused(registry, tmp_path):
    train(_recipe(steps=4), tmp_path / "pre", registry)
    recipe = _recipe("toy-b", steps=4)
    recipe = dataclasses.replace(recipe, transfer=dataclasses.replace(recipe.transfer, trunk=str(tmp_path / "pre"), trunk_lr_scale=0.1))
    with pytest.raises(RecipeError, match="trunk_lr_scale = 0.1 .*the trunk is frozen"):
        train(recipe, tmp_path / "xfer", registry)
    assert not (tmp_path / "xfer" / "checkpoints").exists()
    with pytest.raises(ValueError, match="trunk_lr_scale must be a finite number > 0"):
        dataclasses.replace(recipe.transfer, trunk_lr_scale=0.0)


def test_transfer_from_a_mismatched_trunk_lists_the_bad_keys(registry, tmp_path):
    train(_recipe(steps=5), tmp_path / "pre", registry)
    weights = tmp_path / "pre" / "checkpoints" / "latest" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    del tensors["trunk.blocks.1.norm_2.bias"]
    tensors["trunk.blocks.0.norm_1.weight"] = torch.zeros(7)
    save_file(tensors, str(weights))
    recipe = _recipe("toy-b", steps=5)
    recipe = dataclasses.replace(recipe, transfer=dataclasses.replace(recipe.transfer, trunk=str(tmp_path / "pre")))
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks.1.norm_2.bias'\].*mis-shaped keys blocks.0.norm_1.weight \(7,\)"):
        train(recipe, tmp_path / "xfer", registry)


def test_mixture_follows_the_weights(registry, tmp_path):
    recipe = parse_recipe({
        "trunk": {"preset": "tiny"},
        "datasets": [{"embodiment": "toy", "weight": 3.0, "episodes": 6}, {"embodiment": "toy-b", "weight": 1.0, "episodes": 6}],
        "train": {"steps": 200, "batch_size": 4, "log_every": 1, "val_every": 200, "checkpoint_every": 200},
    }, "mix")
    seen = []
    train(recipe, tmp_path / "mix", registry, on_log=lambda r: seen.append(r.get("embodiment")))
    share = np.mean([s == "toy" for s in seen if s])
    assert 0.65 < share < 0.85


def test_mixed_batches_follow_the_weights_and_train_every_embodiment(registry, tmp_path):
    # toy and toy-b differ in horizons, so their stems emit different token counts: padded and masked.
    recipe = parse_recipe({
        "trunk": {"preset": "custom", "embed_dim": 32, "num_blocks": 2, "num_heads": 4},
        "datasets": [{"embodiment": "toy", "weight": 3.0, "episodes": 20}, {"embodiment": "toy-b", "weight": 1.0, "episodes": 20}],
        "train": {"steps": 200, "batch_size": 32, "lr": 3e-3, "warmup_steps": 5, "log_every": 1, "val_every": 10,
                  "checkpoint_every": 200, "val_fraction": 0.2, "mix": "batch"},
    }, "mixed")
    seen = []
    train(recipe, tmp_path / "mixed", registry, on_log=seen.append)
    drawn = [r["samples"] for r in seen if "samples" in r]
    assert len(drawn) == 200 and all(sum(d.values()) == 32 for d in drawn)
    assert {r["embodiment"] for r in seen if "loss" in r} == {"mixed"}
    share = sum(d.get("toy", 0) for d in drawn) / (32 * 200)
    assert 0.72 < share < 0.78  # 3 : 1 by sample
    val = [r["val_loss"] for r in seen if "val_loss" in r]
    for name in ("toy", "toy-b"):
        assert val[-1][name] < 0.3 * val[0][name], (name, val[0], val[-1])  # both heads and stems learn


class ToyHeadPlugin:
    """A plugin that brings its own head kind (here: the mlp head under another name)."""

    @staticmethod
    def hpt_register_heads(registry):
        from hpt_kit.models.heads import build_mlp_head

        registry.add("toy-head", build_mlp_head)


ToyHeadPlugin.hpt_register_heads = __import__("hpt_kit").hookimpl(ToyHeadPlugin.hpt_register_heads)


def test_a_policy_loads_a_checkpoint_whose_head_a_plugin_registers(tmp_path):
    from hpt_kit.core.registry import UnknownNameError

    registry = load_registry(load_entrypoints=False, extra_plugins=[("toys", ToyPlugin), ("heads", ToyHeadPlugin)])
    recipe = _recipe(steps=2)
    train(dataclasses.replace(recipe, datasets=(dataclasses.replace(recipe.datasets[0], head="toy-head"),)), tmp_path / "run", registry)
    with pytest.raises(UnknownNameError, match="toy-head"):
        Policy.from_checkpoint(tmp_path / "run")  # the installed components do not have it
    policy = Policy.from_checkpoint(tmp_path / "run", execute_steps=1, device="cpu", registry=registry)
    assert policy.spec.head.kind == "toy-head" and policy.device == torch.device("cpu")
    assert policy.act({"state": np.zeros(3, np.float32)}).shape == (1,)


def test_recipe_overrides_horizons_and_head_options(registry, tmp_path):
    recipe = _recipe(steps=5)
    entry = dataclasses.replace(recipe.datasets[0], observation_horizon=3, action_horizon=5, head_options={"note": 1})
    train(dataclasses.replace(recipe, datasets=(entry,)), tmp_path / "run", registry)
    spec = resolve_checkpoint(tmp_path / "run").specs["toy"]
    assert spec.observation_horizon == 3 and spec.action_horizon == 5 and spec.head.options == {"note": 1}
    model = HPT.from_checkpoint(resolve_checkpoint(tmp_path / "run"), registry)
    assert model.predict("toy", {"state": torch.zeros(2, 3, 3)}).shape == (2, 5, 1)


def test_a_missing_dataset_that_may_not_be_converted_names_the_key_and_file(registry, tmp_path):
    recipe = parse_recipe(
        {"trunk": {"preset": "tiny"}, "datasets": [{"embodiment": "toy", "path": str(tmp_path / "none.zarr"), "convert": False}]},
        "recipes/x.toml",
    )
    from hpt_kit.core.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"recipes/x.toml: datasets\[0\].path: dataset .*none.zarr does not exist"):
        train(recipe, tmp_path / "run", registry)
    unknown = parse_recipe({"datasets": [{"embodiment": "nope"}]}, "recipes/y.toml")
    with pytest.raises(RecipeError, match=r"recipes/y.toml: datasets\[0\].embodiment: unknown embodiment 'nope'; known: toy, toy-b"):
        train(unknown, tmp_path / "run2", registry)


class CameraToyPlugin:
    @staticmethod
    @__import__("hpt_kit").hookimpl
    def hpt_register_embodiments(registry):
        registry.add(make_image_toy())


def _image_recipe(steps=4, **entry):
    return parse_recipe(
        {
            "trunk": {"preset": "tiny"},
            "datasets": [{"embodiment": "toy-cam", "episodes": 6, **entry}],
            "train": {
                "steps": steps,
                "batch_size": 8,
                "lr": 1e-3,
                "warmup_steps": 1,
                "val_fraction": 0.2,
                "val_batches": 1,
                "checkpoint_every": steps,
                "log_every": 1,
            },
        },
        "cam.toml",
    )


@pytest.fixture
def camera_registry():
    return load_registry(load_entrypoints=False, extra_plugins=[("camera", CameraToyPlugin)])


def test_end_to_end_image_run_trains_the_encoder_and_its_checkpoint_needs_no_weights_file(
    camera_registry, tmp_path
):
    import torchvision
    from safetensors.torch import load_file

    torch.manual_seed(3)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    recipe = _image_recipe(stem_options={"image": {"weights": str(weights), "views": "independent"}})
    train(recipe, tmp_path / "run", camera_registry)
    ckpt = resolve_checkpoint(tmp_path / "run")
    image_stem = next(s for s in ckpt.specs["toy-cam"].stems if s.modality == "image")
    assert image_stem.options == {"weights": str(weights), "views": "independent"}
    tensors = load_file(str(ckpt.path / "model.safetensors"))
    loaded = torch.load(weights, weights_only=True)
    key = "stems.toy-cam.image.encoders.0.conv1.weight"
    assert not torch.equal(tensors[key], loaded["conv1.weight"])  # fine-tuned from the file's weights
    weights.unlink()  # the checkpoint holds the encoder: building it reads no weights file
    policy = Policy.from_checkpoint(tmp_path / "run")
    assert policy.needs_images
    result = make_image_toy().rollout(
        policy, __import__("hpt_kit").RolloutRequest(episodes=2, seed=0, render=True)
    )
    assert len(result.successes) == 2


def test_a_recipe_can_ask_for_precomputed_image_features(camera_registry, tmp_path):
    from hpt_kit.core.recipe import RecipeError
    from hpt_kit.data.store import Dataset

    recipe = _image_recipe(image_encoder="resnet18", image_encoder_weights="none")
    train(recipe, tmp_path / "run", camera_registry)  # converts toy-cam with its frames encoded
    ds = Dataset(tmp_path / "datasets" / "toy-cam.zarr")
    assert ds.spec.observation.image_features.encoder.arch == "resnet18"
    ckpt = resolve_checkpoint(tmp_path / "run")
    assert [s.modality for s in ckpt.specs["toy-cam"].stems] == ["state", "image_features"]
    assert not any(".encoders." in k for k in ckpt.tensors())  # the frozen encoder is not in the model
    policy = Policy.from_checkpoint(tmp_path / "run")
    result = make_image_toy().rollout(
        policy, __import__("hpt_kit").RolloutRequest(episodes=1, seed=0, render=True)
    )
    assert len(result.successes) == 1
    # An existing dataset from another encoder, or none, is not silently used.
    other = _image_recipe(image_encoder="resnet34", image_encoder_weights="none")
    with pytest.raises(
        RecipeError,
        match=r"datasets\[0\].image_encoder: dataset .* holds features from resnet18.*--overwrite",
    ):
        train(other, tmp_path / "run2", camera_registry)


def test_stem_options_in_a_recipe_are_checked(camera_registry, tmp_path):
    from hpt_kit.core.recipe import RecipeError

    with pytest.raises(
        RecipeError,
        match=r"cam.toml: datasets\[0\].stem_options.images: no stem reads 'images'; stems read: state, image",
    ):
        train(_image_recipe(stem_options={"images": {"views": "shared"}}), tmp_path / "a", camera_registry)
    with pytest.raises(
        RecipeError,
        match=r"cannot build the model: stem 'resnet': unknown option 'view'; known: arch, weights",
    ):
        train(_image_recipe(stem_options={"image": {"view": "shared"}}), tmp_path / "b", camera_registry)
    with pytest.raises(RecipeError, match="unknown image encoder 'vgg16'"):
        _image_recipe(image_encoder="vgg16")


def test_compiled_training_follows_the_eager_run(registry, tmp_path):
    import json

    recipe = _recipe(steps=8, log_every=1, val_every=8, checkpoint_every=8)
    train(recipe, tmp_path / "eager", registry)
    train(dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, compile=True)), tmp_path / "compiled", registry)

    def losses(run):
        return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]

    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 8
    np.testing.assert_allclose(compiled, eager, rtol=1e-3, atol=1e-5)  # same data, same steps, fused kernels
