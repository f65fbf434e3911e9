"""Every registered head: the contract (shapes, finite loss, gradients), option checking, and learning.

The learning test fits 64 fixed samples of the real ``mujoco-arm3`` expert: the "trunk tokens" are a
fixed random projection of the standardised states, the targets the expert's normalised action chunks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import ConvertRequest, HeadSpec, spec_from_dict, spec_to_dict
from hpt_kit.models.hpt import HPT

COMPONENTS = load_registry(load_entrypoints=False)
HEADS = sorted(COMPONENTS.heads)
WITH_OPTIONS = [h for h in HEADS if h != "mlp"]  # mlp takes no options and ignores them
WIDTH, TOKENS, SAMPLES = 32, 4, 64

# Learning budget and what counts as learned. Targets lie in [-1, 1]; an untrained head is off by
# 0.5-1.0 on average. MAE = mean absolute error over every step and dimension of the 64 chunks.
STEPS = {"mlp": 300, "transformer-decoder": 300, "gmm": 300, "diffusion": 500}
LOSS_FACTOR = 10.0  # final loss <= initial / LOSS_FACTOR (regression and noise-prediction losses)
GMM_NLL_DROP = 2.0  # the gmm loss is an NLL per dimension and can go negative: it must fall by 2 nats
MAE_TOLERANCE = 0.12
# A smaller denoiser than the default keeps the diffusion test within seconds on a CPU.
LEARN_OPTIONS = {"diffusion": {"width": 64, "layers": 1}}


def _head(kind: str, horizon: int = 4, action_dim: int = 3, **options) -> torch.nn.Module:
    spec = HeadSpec(kind=kind, hidden=(128, 128), action_horizon=horizon, loss="mse", options=options)
    return COMPONENTS.head(kind)(spec, WIDTH, action_dim)


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("horizon", [1, 4])
def test_shapes_finite_loss_and_gradients(kind, horizon):
    torch.manual_seed(0)
    head = _head(kind, horizon, action_dim=5)
    features = torch.randn(6, 7, WIDTH)
    actions = torch.rand(6, horizon, 5) * 2 - 1
    assert head.predict(features).shape == (6, horizon, 5)
    loss = head.loss(features, actions)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("kind", HEADS)
def test_every_head_serves_a_real_model(kind):
    arm = load_registry().embodiment("mujoco-arm3")
    spec = dataclasses.replace(spec_from_dict(spec_to_dict(arm)), head=HeadSpec(kind=kind, action_horizon=3))
    S, A = spec.observation.state_dim, spec.action.dim
    stats = {"state": {"mean": [0.0] * S, "std": [1.0] * S}, "action": {"min": [-2.0] * A, "max": [2.0] * A}}
    model = HPT(TrunkConfig(WIDTH, 1, 4), {spec.name: spec}, {spec.name: stats}, COMPONENTS)
    batch = {"state": torch.randn(2, 1, S), "action": torch.rand(2, 3, A) * 4 - 2}
    assert model.predict(spec.name, batch).shape == (2, 3, A)
    model.loss(spec.name, batch).backward()


@pytest.mark.parametrize("kind", WITH_OPTIONS)
def test_unknown_option_names_the_head_the_key_and_the_known_keys(kind):
    with pytest.raises(ValueError, match=rf"head '{kind}': unknown option 'lyers'; known: \w+"):
        _head(kind, lyers=2)


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("transformer-decoder", {"heads": 5}, "not divisible"),
        ("transformer-decoder", {"layers": 1.5}, "'layers' must be int"),
        ("diffusion", {"inference_steps": 200}, r"inference_steps must be in \[1, train_steps=100\]"),
        ("diffusion", {"schedule": "sigmoid"}, "schedule must be one of cosine, linear"),
        ("gmm", {"min_std": 0}, "min_std must be > 0"),
        ("gmm", {"modes": 0}, "modes must be >= 1"),
    ],
)
def test_bad_option_values_are_errors(kind, options, message):
    with pytest.raises(ValueError, match=message):
        _head(kind, **options)


def test_diffusion_sampling_is_seeded_and_leaves_the_global_rng_alone():
    head = _head("diffusion", inference_steps=3)
    features = torch.randn(4, 5, WIDTH)
    state = torch.get_rng_state()
    first = head.predict(features)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    torch.testing.assert_close(head.predict(features), first)  # global seed does not matter
    torch.testing.assert_close(head.predict(features[:2]), first[:2])  # nor does the batch size
    assert first.abs().max() <= 1
    other = _head("diffusion", inference_steps=3, seed=1)
    other.load_state_dict(head.state_dict())
    assert not torch.allclose(other.predict(features), first)


@pytest.fixture(scope="module")
def episodes() -> list[dict[str, np.ndarray]]:
    arm = load_registry().embodiment("mujoco-arm3")
    return list(arm.convert_dataset(ConvertRequest(episodes=8, seed=0)))


def fixed_dataset(episodes, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """64 (tokens (N, TOKENS, WIDTH), chunk (N, horizon, A)) pairs; chunks repeat the last action at the end."""
    states, chunks = [], []
    for ep in episodes:
        for t in range(len(ep["state"])):
            steps = np.minimum(np.arange(t, t + horizon), len(ep["action"]) - 1)
            states.append(ep["state"][t])
            chunks.append(ep["action"][steps])  # the arm's actions already span [-1, 1]
    pick = np.random.default_rng(0).choice(len(states), SAMPLES, replace=False)
    s = np.stack(states)[pick]
    s = (s - s.mean(0)) / (s.std(0) + 1e-6)
    projection = torch.randn(s.shape[1], TOKENS * WIDTH, generator=torch.Generator().manual_seed(0))
    tokens = torch.tanh(torch.tensor(s, dtype=torch.float32) @ projection / np.sqrt(s.shape[1]))
    return tokens.reshape(SAMPLES, TOKENS, WIDTH), torch.tensor(np.stack(chunks)[pick], dtype=torch.float32)


def _mean_loss(head, features, chunks) -> float:
    """The loss averaged over 8 draws with a fixed seed (the diffusion loss samples noise levels)."""
    torch.manual_seed(1)
    with torch.no_grad():
        return float(np.mean([head.loss(features, chunks).item() for _ in range(8)]))


@pytest.mark.parametrize(
    ("kind", "horizon"),
    [(k, 4) for k in HEADS if k != "diffusion"] + [("diffusion", h) for h in (1, 4, 8)],
)
def test_head_learns_the_arm_expert(episodes, one_thread, kind, horizon):
    features, chunks = fixed_dataset(episodes, horizon)
    torch.manual_seed(0)
    head = _head(kind, horizon, **LEARN_OPTIONS.get(kind, {}))
    before = _mean_loss(head, features, chunks)
    steps = STEPS.get(kind, 300)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = head.loss(features, chunks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    after = _mean_loss(head, features, chunks)
    if kind == "gmm":
        assert after <= before - GMM_NLL_DROP, (before, after)
    else:
        assert after <= before / LOSS_FACTOR, (before, after)
    with torch.no_grad():
        mae = (head.predict(features) - chunks).abs().mean().item()
    assert mae <= MAE_TOLERANCE, mae
