"""A mixed-embodiment step equals the per-embodiment steps: same loss, same gradients."""

import torch

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import EmbodimentData, StemSpec
from hpt_kit.lab.bench import standard_batch, standard_spec, standard_stats
from hpt_kit.models.hpt import HPT


def _model():
    image = standard_spec("with-images")  # state + image features: 32 tokens
    state_only = EmbodimentData(**{**standard_spec("state-only").__dict__, "stems": (StemSpec("state", num_tokens=12),)})
    torch.manual_seed(0)
    specs = {"with-images": image, "state-only": state_only}
    stats = {n: standard_stats() for n in specs}
    return HPT(TrunkConfig(32, 2, 4), specs, stats, load_registry(load_entrypoints=False))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_mixed_step_matches_per_embodiment_steps_with_different_token_counts():
    model = _model().eval()
    batches = {"with-images": standard_batch(6, "cpu", seed=1), "state-only": standard_batch(10, "cpu", seed=2)}
    batches["state-only"] = {k: v for k, v in batches["state-only"].items() if k != "image_features"}

    mixed = model.loss_mixed(batches)
    mixed.backward()
    g_mixed = _grads(model)
    model.zero_grad()

    total = sum(len(b["action"]) for b in batches.values())
    separate = sum(model.loss(n, b) * (len(b["action"]) / total) for n, b in batches.items())
    separate.backward()
    g_sep = _grads(model)

    torch.testing.assert_close(mixed, separate, atol=1e-5, rtol=1e-5)
    assert g_mixed.keys() == g_sep.keys() and any(k.startswith("trunk.") for k in g_mixed)
    for k in g_sep:
        torch.testing.assert_close(g_mixed[k], g_sep[k], atol=1e-5, rtol=1e-4, msg=k)
