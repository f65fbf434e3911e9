import numpy as np
import torch

from hpt_kit.models.hpt import HPT
from hpt_kit.models.trunk import TrunkConfig
from hpt_kit.policy import Policy
from hpt_kit.registry import load_registry


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
