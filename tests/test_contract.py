"""The embodiment contract, for every embodiment installed in this environment."""

import pytest

from hpt_kit.contract import check_embodiment, registered_embodiments
from hpt_kit.core.registry import load_registry

REGISTRY = load_registry()


def test_first_party_embodiments_are_installed():
    assert {"mujoco-arm3", "mujoco-arm4"} <= set(REGISTRY.embodiments), REGISTRY.errors
    assert REGISTRY.errors == []


@pytest.mark.parametrize("name", sorted(REGISTRY.embodiments))
def test_embodiment_contract(name):
    emb = REGISTRY.embodiment(name)
    language = emb.observation.language
    if language is not None and language.encoder and language.encoder not in REGISTRY.text_encoders:
        pytest.skip(f"{name} needs text encoder {language.encoder!r}, which no installed plugin registers")
    report = check_embodiment(emb, episodes=2, rollout_episodes=2)
    assert len(report.episodes) == 2
    assert all(len(ep["action"]) >= 1 for ep in report.episodes)
    assert 0.0 <= report.rollout.success_rate <= 1.0
    assert report.controller_calls >= 2


def test_registered_embodiments_runs_the_kits_registrar_and_raises_its_errors():
    import hpt_kit
    from hpt_kit.core.spec import SpecError
    from tests.conftest import make_toy

    class Good:
        @staticmethod
        @hpt_kit.hookimpl
        def hpt_register_embodiments(registry):
            registry.add(make_toy("toy"))

    class Bad:
        @staticmethod
        @hpt_kit.hookimpl
        def hpt_register_embodiments(registry):
            registry.add(make_toy("Bad Name"))

    assert list(registered_embodiments(Good, "good")) == ["toy"]
    with pytest.raises(SpecError, match="plugin 'bad': Bad Name: .*lowercase"):
        registered_embodiments(Bad, "bad")


def test_rollout_envs_must_pickle_and_give_the_rollouts_episodes():
    import dataclasses
    from functools import partial

    from hpt_kit.contract import check_rollout_envs
    from hpt_kit.core.spec import RolloutRequest, SpecError
    from hpt_kit.rollout import EnvFactory

    emb = REGISTRY.embodiment("mujoco-arm3")
    request = RolloutRequest(episodes=2, seed=0)
    report = check_embodiment(emb, episodes=1, rollout_episodes=2)  # the plugin's own passes
    envs = emb.rollout_envs(request)
    make = envs.sources[0].make

    def unpicklable(req):
        return dataclasses.replace(envs, sources=(EnvFactory(lambda: make()),))

    with pytest.raises(SpecError, match="rollout_envs does not pickle"):
        check_rollout_envs(dataclasses.replace(emb, rollout_envs=unpicklable), request, report.rollout)

    def other_seeds(req):  # a seed key the plugin's rollout does not use: other episodes
        return dataclasses.replace(envs, sources=(EnvFactory(make, key=(7,)),))

    with pytest.raises(SpecError, match="rollout_envs gave other episodes than rollout"):
        check_rollout_envs(dataclasses.replace(emb, rollout_envs=partial(other_seeds)), request, report.rollout)
