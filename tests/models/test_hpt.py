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
    ObservationSpec,
    StemSpec,
)
from hpt_kit.models.heads import MlpHead
from hpt_kit.models.hpt import HPT
from hpt_kit.models.normalizer import Normalizer
from hpt_kit.models.stems import MlpStem

WIDTH = 32


def _stats(state_dim, action_dim, seed=0):
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-2, -1, action_dim)
    return {
        "state": {"mean": rng.normal(size=state_dim).tolist(), "std": rng.uniform(0.5, 2, state_dim).tolist()},
        "action": {"min": lo.tolist(), "max": (lo + rng.uniform(1, 3, action_dim)).tolist()},
    }


def _spec(name, state_dim, action_dim, images=False, horizon=2, chunk=4):
    feats = ImageFeatureSpec(("front", "wrist"), 49, 64) if images else None
    stems = (StemSpec("state", num_tokens=16, num_heads=4),)
    if images:
        stems += (StemSpec("image_features", num_tokens=8, num_heads=4),)
    return EmbodimentData(
        name=name,
        observation=ObservationSpec(state_dim, image_features=feats),
        action=ActionSpec(action_dim, (-1.0,) * action_dim, (1.0,) * action_dim, 10.0),
        stems=stems,
        head=HeadSpec(action_horizon=chunk),
        observation_horizon=horizon,
    )


def test_state_stem_gives_fixed_tokens_whatever_the_history():
    for horizon in (1, 3):
        stem = MlpStem(StemSpec("state", num_tokens=16, num_heads=4), (7,), WIDTH, horizon)
        assert stem(torch.randn(5, horizon, 7)).shape == (5, 16, WIDTH)


def test_image_feature_stem_tokens():
    stem = MlpStem(StemSpec("image_features", num_tokens=8, num_heads=4), (2, 49, 64), WIDTH, 1)
    assert stem.tokens_in == 98
    assert stem(torch.randn(3, 1, 2, 49, 64)).shape == (3, 8, WIDTH)


def test_mlp_head_shapes_and_finite_loss():
    head = MlpHead(HeadSpec(action_horizon=4), WIDTH, 3)
    feats = torch.randn(6, 20, WIDTH)
    assert head.predict(feats).shape == (6, 4, 3)
    loss = head.loss(feats, torch.randn(6, 4, 3))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_normalizer_round_trip_and_range():
    stats = _stats(5, 3)
    norm = Normalizer(stats)
    a = torch.tensor(stats["action"]["min"]) + torch.rand(10, 3) * (
        torch.tensor(stats["action"]["max"]) - torch.tensor(stats["action"]["min"])
    )
    n = norm.action(a)
    assert n.min() >= -1 - 1e-6 and n.max() <= 1 + 1e-6
    torch.testing.assert_close(norm.unaction(n), a)
    s = torch.randn(10, 5)
    torch.testing.assert_close(norm.state(s) * norm.state_scale + norm.state_mean, s)
    assert norm.stats()["action"]["max"] == pytest.approx(stats["action"]["max"], rel=1e-6)


def test_normalizer_keeps_constant_dimensions_finite():
    norm = Normalizer({"state": {"mean": [1.0], "std": [0.0]}, "action": {"min": [2.0], "max": [2.0]}})
    assert torch.isfinite(norm.state(torch.tensor([[3.0]]))).all()
    assert torch.isfinite(norm.action(torch.tensor([[2.0]]))).all()


def test_hpt_composes_heterogeneous_embodiments():
    specs = {"a": _spec("a", 7, 3), "b": _spec("b", 11, 5, images=True, horizon=1, chunk=2)}
    stats = {"a": _stats(7, 3), "b": _stats(11, 5)}
    model = HPT(TrunkConfig(WIDTH, 2, 4), specs, stats, load_registry(load_entrypoints=False))
    out_a = model.predict("a", {"state": torch.randn(2, 2, 7)})
    out_b = model.predict("b", {"state": torch.randn(2, 1, 11), "image_features": torch.randn(2, 1, 2, 49, 64)})
    assert out_a.shape == (2, 4, 3) and out_b.shape == (2, 2, 5)
    loss = model.loss("a", {"state": torch.randn(2, 2, 7), "action": torch.randn(2, 4, 3)})
    loss.backward()
    assert model.stems["a"]["state"].project.net[0].weight.grad is not None
    assert model.stems["b"]["state"].project.net[0].weight.grad is None  # only a's branch ran
    # One trunk is shared; stems and heads are per embodiment; weights are saved with trunk. prefix.
    keys = model.state_dict().keys()
    assert any(k.startswith("trunk.blocks.0.attn.in_proj_weight") for k in keys)
    assert "pos_table" not in keys


def test_unknown_head_lists_the_known_ones():
    spec = _spec("a", 3, 2)
    bad = EmbodimentData(**{**spec.__dict__, "head": HeadSpec(kind="nope")})
    with pytest.raises(KeyError, match="unknown head 'nope'; known: diffusion, gmm, mlp, transformer-decoder"):
        HPT(TrunkConfig(WIDTH, 1, 4), {"a": bad}, {"a": _stats(3, 2)}, load_registry(load_entrypoints=False))


class _Components:
    """A plugin registering a head without ``predict``, a stem with a bad token count, and a stem
    whose builder predates the ``pretrained`` keyword."""

    @staticmethod
    def hpt_register_heads(registry):
        class NoPredict(torch.nn.Module):
            def loss(self, features, actions):
                return features.mean()

        registry.add("no-predict", lambda spec, width, action_dim: NoPredict())

    @staticmethod
    def hpt_register_stems(registry):
        def zero_tokens(spec, shape, width, horizon):
            stem = MlpStem(spec, shape, width, horizon)
            stem.tokens_out = 0
            return stem

        registry.add("zero-tokens", zero_tokens)
        registry.add("old-mlp", lambda spec, shape, width, horizon: MlpStem(spec, shape, width, horizon))


def _components():
    from hpt_kit.hookspecs import hookimpl

    for name in ("hpt_register_heads", "hpt_register_stems"):
        hookimpl(getattr(_Components, name))
    return load_registry(load_entrypoints=False, extra_plugins=[("broken-parts", _Components)])


def test_a_head_without_predict_is_refused_naming_the_plugin_and_member():
    spec = _spec("a", 3, 2)
    bad = EmbodimentData(**{**spec.__dict__, "head": HeadSpec(kind="no-predict")})
    with pytest.raises(TypeError, match="head 'no-predict' of plugin 'broken-parts' has no predict"):
        HPT(TrunkConfig(WIDTH, 1, 4), {"a": bad}, {"a": _stats(3, 2)}, _components())


def test_a_stem_with_no_tokens_is_refused_and_an_old_builder_still_builds():
    spec = _spec("a", 3, 2)
    stats = {"a": _stats(3, 2)}
    bad = EmbodimentData(**{**spec.__dict__, "stems": (StemSpec("state", kind="zero-tokens", num_tokens=4, num_heads=4),)})
    with pytest.raises(TypeError, match="stem 'zero-tokens' of plugin 'broken-parts': tokens_out must be an integer >= 1"):
        HPT(TrunkConfig(WIDTH, 1, 4), {"a": bad}, stats, _components())
    old = EmbodimentData(**{**spec.__dict__, "stems": (StemSpec("state", kind="old-mlp", num_tokens=4, num_heads=4),)})
    model = HPT(TrunkConfig(WIDTH, 1, 4), {"a": old}, stats, _components(), pretrained=False)
    assert model.predict("a", {"state": torch.zeros(2, 2, 3)}).shape == (2, 4, 2)
