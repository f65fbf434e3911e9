import dataclasses
import json

import numpy as np
import pytest
import torch

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import RolloutRequest
from hpt_kit.models.hpt import HPT
from hpt_kit.models.vision import EncoderWeightsError, ResNetEncoder, encode_frames
from hpt_kit.policy import Policy
from tests.conftest import image_spec, image_stats


def _model(toy):
    stats = {
        "state": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "action": {"min": [-1.0], "max": [1.0]},
    }
    torch.manual_seed(0)
    return HPT(TrunkConfig(16, 1, 4), {toy.name: toy}, {toy.name: stats}, load_registry(load_entrypoints=False))


def test_act_keeps_history_and_executes_chunks(toy):
    model = _model(toy)  # observation_horizon 2, action_horizon 3
    policy = Policy(model, toy.name, execute_steps=2)
    obs = [np.random.default_rng(i).normal(size=3).astype(np.float32) for i in range(5)]
    actions = [policy.act({"state": o}) for o in obs]

    def chunk(history):
        with torch.no_grad():
            return model.predict(toy.name, {"state": torch.tensor(np.stack(history))[None]})[0].numpy()

    c1 = chunk([obs[0], obs[0]])  # the history before the first step repeats it
    c2 = chunk([obs[1], obs[2]])
    c3 = chunk([obs[3], obs[4]])
    expected = [c1[0], c1[1], c2[0], c2[1], c3[0]]
    for got, want in zip(actions, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # reset() starts a new episode: the history is refilled from the next observation.
    policy.reset()
    np.testing.assert_allclose(policy.act({"state": obs[4]}), chunk([obs[4], obs[4]])[0], atol=1e-6)


def test_default_executes_the_whole_chunk(toy):
    policy = Policy(_model(toy), toy.name)
    assert policy.execute_steps == 3


def _histories(obs, horizon=2):
    """The policy's history at every step: the last ``horizon`` observations, the first one repeated."""
    padded = [obs[0]] * (horizon - 1) + list(obs)
    return [np.stack(padded[t : t + horizon]) for t in range(len(obs))]


def test_temporal_ensembling_matches_a_hand_computation(toy):
    model = _model(toy)  # observation_horizon 2, action_horizon 3
    m = 0.5
    policy = Policy(model, toy.name, ensemble=m)
    obs = [np.random.default_rng(i).normal(size=3).astype(np.float32) for i in range(5)]
    actions = [policy.act({"state": o}) for o in obs]
    with torch.no_grad():
        c = [model.predict(toy.name, {"state": torch.tensor(h)[None]})[0].numpy() for h in _histories(obs)]
    w0, w1, w2 = 1.0, np.exp(-m), np.exp(-2 * m)  # oldest prediction first, weighted most
    expected = [
        c[0][0],
        (w0 * c[0][1] + w1 * c[1][0]) / (w0 + w1),
        (w0 * c[0][2] + w1 * c[1][1] + w2 * c[2][0]) / (w0 + w1 + w2),
        (w0 * c[1][2] + w1 * c[2][1] + w2 * c[3][0]) / (w0 + w1 + w2),  # chunk 0 no longer covers step 3
        (w0 * c[2][2] + w1 * c[3][1] + w2 * c[4][0]) / (w0 + w1 + w2),
    ]
    for got, want in zip(actions, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(actions[2], c[2][0], atol=1e-4)  # the average is not just the newest chunk
    # reset() forgets the old chunks as well as the history.
    policy.reset()
    with torch.no_grad():
        fresh = model.predict(toy.name, {"state": torch.tensor(np.stack([obs[4], obs[4]]))[None]})[0, 0].numpy()
    np.testing.assert_allclose(policy.act({"state": obs[4]}), fresh, atol=1e-6)


def test_zero_m_averages_the_overlapping_predictions_equally(toy):
    model = _model(toy)
    policy = Policy(model, toy.name, ensemble=0.0)
    obs = [np.full(3, i, np.float32) for i in range(3)]
    actions = [policy.act({"state": o}) for o in obs]
    with torch.no_grad():
        c = [model.predict(toy.name, {"state": torch.tensor(h)[None]})[0].numpy() for h in _histories(obs)]
    np.testing.assert_allclose(actions[2], (c[0][2] + c[1][1] + c[2][0]) / 3, atol=1e-6)


def test_modes_are_checked(toy):
    model = _model(toy)
    with pytest.raises(ValueError, match="not both"):
        Policy(model, toy.name, execute_steps=2, ensemble=0.01)
    with pytest.raises(ValueError, match="finite m >= 0"):
        Policy(model, toy.name, ensemble=-1.0)
    with pytest.raises(ValueError, match="exceeds the action horizon"):
        Policy(model, toy.name, execute_steps=4)


@pytest.mark.parametrize(("execute_steps", "ensemble"), [(2, None), (0, 0.01)])
def test_both_modes_drive_the_mujoco_arm(execute_steps, ensemble):
    arm = load_registry().embodiment("mujoco-arm3")
    S, A = arm.observation.state_dim, arm.action.dim
    stats = {"state": {"mean": [0.0] * S, "std": [1.0] * S}, "action": {"min": [-1.0] * A, "max": [1.0] * A}}
    torch.manual_seed(0)
    model = HPT(TrunkConfig(16, 1, 4), {arm.name: arm}, {arm.name: stats}, load_registry(load_entrypoints=False))
    policy = Policy(model, arm.name, execute_steps=execute_steps, ensemble=ensemble)
    calls = []
    predict = model.predict
    model.predict = lambda *a, **k: calls.append(1) or predict(*a, **k)
    result = arm.rollout(policy, RolloutRequest(episodes=2, seed=0))
    assert 0.0 <= result.success_rate <= 1.0 and len(result.successes) == 2
    per_chunk = 1 if ensemble is not None else execute_steps  # steps served by each predicted chunk
    assert len(calls) == sum(-(-n // per_chunk) for n in result.episode_lengths)


def test_eval_command_takes_the_mode_from_the_recipe_or_the_options(tmp_path, capsys):
    import typer

    from hpt_kit.cli.evaluate import eval_command
    from hpt_kit.core.recipe import parse_recipe
    from hpt_kit.train.loop import train

    recipe = parse_recipe(
        {
            "trunk": {"preset": "tiny"},
            "datasets": [{"embodiment": "mujoco-arm3", "episodes": 4}],
            "train": {"steps": 2, "batch_size": 8, "warmup_steps": 1, "val_fraction": 0.0},
            "eval": {"temporal_ensemble": 0.02},
        }
    )
    train(recipe, tmp_path / "run", load_registry())

    def evaluate(**options):
        eval_command(str(tmp_path / "run"), episodes=1, as_json=True, **options)
        return json.loads(capsys.readouterr().out)

    assert evaluate()["temporal_ensemble"] == 0.02  # the recipe's [eval] section
    out = evaluate(execute_steps=2)  # an explicit option replaces the recipe's mode
    assert out["execute_steps"] == 2 and out["temporal_ensemble"] == 0.0
    out = evaluate(temporal_ensemble=0.5)
    assert out["execute_steps"] is None and out["temporal_ensemble"] == 0.5
    assert 0.0 <= out["success_rate"] <= 1.0
    with pytest.raises(typer.BadParameter, match="not both"):
        evaluate(execute_steps=2, temporal_ensemble=0.5)


def _image_history(frames, t, horizon=2):
    """The policy's frame history at step t: the last ``horizon`` frames, the first one repeated."""
    padded = [frames[0]] * (horizon - 1) + list(frames)
    return torch.as_tensor(np.stack(padded[t : t + horizon]))[None]


def _image_model(spec):
    torch.manual_seed(0)
    return HPT(
        TrunkConfig(32, 1, 4),
        {spec.name: spec},
        {spec.name: image_stats()},
        load_registry(load_entrypoints=False),
    )


def _raw_observations(n=3, views=2, size=32):
    rng = np.random.default_rng(0)
    return [
        {
            "state": rng.normal(size=4).astype(np.float32),
            "image": rng.integers(0, 256, (views, size, size, 3), dtype=np.uint8),
        }
        for _ in range(n)
    ]


def test_act_on_raw_images_end_to_end():
    spec = image_spec()  # two views, 32x32, observation_horizon 2, action_horizon 3
    model = _image_model(spec)
    policy = Policy(model, spec.name, execute_steps=1)
    assert policy.needs_images
    obs = _raw_observations()
    actions = [policy.act(o) for o in obs]
    states = [o["state"] for o in obs]
    frames = [o["image"] for o in obs]
    for t, action in enumerate(actions):
        with torch.no_grad():
            want = model.predict(
                spec.name, {"state": _image_history(states, t), "image": _image_history(frames, t)}
            )
        np.testing.assert_allclose(action, want[0, 0].numpy(), atol=1e-5)
    with pytest.raises(TypeError, match="'image' must be uint8"):
        policy.act({"state": states[0], "image": frames[0].astype(np.float32)})


def test_act_on_raw_images_with_a_policy_trained_on_precomputed_features():
    encoder = ResNetEncoder("resnet18", weights=None).eval()
    spec = image_spec(precomputed=encoder)
    assert [s.modality for s in spec.stems] == ["state", "image_features"]
    model = _image_model(spec)
    policy = Policy(model, spec.name, execute_steps=1)
    assert policy.needs_images  # the rollout must render: the policy encodes the frames itself
    obs = _raw_observations()
    actions = [policy.act(o) for o in obs]
    states = [o["state"] for o in obs]
    features = [
        encode_frames(encoder, torch.as_tensor(o["image"])).numpy() for o in obs
    ]  # as conversion stores
    for t, action in enumerate(actions):
        batch = {"state": _image_history(states, t), "image_features": _image_history(features, t)}
        with torch.no_grad():
            want = model.predict(spec.name, batch)
        np.testing.assert_allclose(action, want[0, 0].numpy(), atol=1e-5)
    # Stored features work as well as frames.
    policy.reset()
    np.testing.assert_allclose(
        policy.act({"state": states[0], "image_features": features[0]}),
        Policy(model, spec.name).act(obs[0]),
        atol=1e-5,
    )
    # Another encoder than the recorded one is refused rather than silently giving other features.
    feats = spec.observation.image_features
    forged = dataclasses.replace(feats, encoder=dataclasses.replace(feats.encoder, sha256="0" * 64))
    other = dataclasses.replace(
        spec, observation=dataclasses.replace(spec.observation, image_features=forged)
    )
    policy = Policy(_image_model(other), spec.name)  # nothing is built before frames arrive
    policy.act({"state": states[0], "image_features": features[0]})
    with pytest.raises(EncoderWeightsError, match="not the one that computed the training features"):
        policy.act(obs[0])
