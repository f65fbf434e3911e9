"""The {{embodiment}} embodiment against the hpt-kit contract."""

from hpt_kit import RolloutRequest
from hpt_kit.contract import check_embodiment

from hpt_kit_{{name}} import plugin


def test_contract():
    report = check_embodiment(plugin.EMBODIMENT)
    assert len(report.episodes) == 2
    assert report.episodes[0]["state"].shape[1] == plugin.EMBODIMENT.observation.state_dim


def test_expert_reaches_the_target():
    result = plugin.expert_rollout(RolloutRequest(episodes=20, seed=0))
    assert result.success_rate >= 0.95, result


def test_registered_through_its_entry_point():
    """Installed (`pip install -e .`), the plugin is found as every `hpt-kit` command finds it."""
    from hpt_kit.core.registry import load_registry

    registry = load_registry()
    problems = [str(e) for e in registry.errors if e.item == "{{embodiment}}" or e.plugin == "{{name}}"]
    assert "{{embodiment}}" in registry.embodiments, (
        f"{{embodiment}} is not registered: {problems or 'is the package installed (pip install -e .)?'}"
    )
    assert not problems, problems
