"""``[log] tensorboard = true``: the run's records as TensorBoard events, read back with TensorBoard's
own EventAccumulator and compared with metrics.jsonl, resume included."""

import dataclasses
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from hpt_kit.core.recipe import LogSection
from hpt_kit.train.loop import train
from hpt_kit.train.tracking import flat_hparams
from tests.train.test_loop import _recipe, registry  # noqa: F401 - the fixture


def events(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_shows_what_metrics_jsonl_holds(registry, tmp_path):  # noqa: F811
    recipe = _recipe(steps=12, log_every=2, val_every=6, checkpoint_every=6)
    recipe = dataclasses.replace(recipe, log=LogSection(tensorboard=True))
    run = tmp_path / "run"
    train(recipe, run, registry)
    acc = events(run)
    logged = [r for r in records(run) if "loss" in r]
    assert [s for s, _ in scalars(acc, "train/loss")] == [r["step"] for r in logged] == [2, 4, 6, 8, 10, 12]
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/samples_per_s", "samples_per_s"), ("train/grad_norm", "grad_norm")):
        assert [v for _, v in scalars(acc, tag)] == pytest.approx([r[key] for r in logged], rel=1e-6)
    assert [v for _, v in scalars(acc, "train/loss/toy")] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    val = [(r["step"], r["val_loss"]["toy"]) for r in records(run) if "val_loss" in r]
    assert scalars(acc, "val/loss/toy") == [(s, pytest.approx(v, rel=1e-6)) for s, v in val]

    hparams = acc.PluginTagToContent("hparams")
    info = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert info.hparams["train.lr"].number_value == pytest.approx(recipe.train.lr)
    assert info.hparams["datasets[0].embodiment"].string_value == "toy"
    assert "lr = 0.003" in acc.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()


def test_a_resumed_run_shows_each_step_once(registry, tmp_path):  # noqa: F811
    recipe = dataclasses.replace(
        _recipe(steps=12, log_every=1, val_every=4, checkpoint_every=4), log=LogSection(tensorboard=True)
    )

    class Stop(Exception):
        pass

    def stop_at_7(record):
        if record.get("step") == 7 and "loss" in record:
            raise Stop

    run = tmp_path / "run"
    with pytest.raises(Stop):
        train(recipe, run, registry, on_log=stop_at_7)
    train(recipe, run, registry, resume=True)  # from step 4: steps 5-7 are logged again
    losses = scalars(events(run), "train/loss")
    assert [s for s, _ in losses] == list(range(1, 13))
    after = {r["step"]: r["loss"] for r in records(run) if "loss" in r}
    assert [v for _, v in losses] == pytest.approx([after[s] for s in range(1, 13)], rel=1e-6)  # the resumed values


def test_off_by_default_and_hparams_flatten():
    assert not (LogSection().tensorboard)
    flat = flat_hparams({"train": {"lr": 1e-3}, "datasets": [{"embodiment": "a", "head_options": {}}], "x": {"y": [1, 2]}})
    assert flat == {"train.lr": 1e-3, "datasets[0].embodiment": "a", "datasets[0].head_options": "{}"} | {"x.y": "[1, 2]"}
