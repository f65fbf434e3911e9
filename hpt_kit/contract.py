"""The embodiment contract as one callable check, shared by the kit's tests and by every plugin's own.

``check_embodiment(emb)`` validates the spec, converts a couple of episodes and validates each, and
runs the rollout runner with a random controller. It raises :class:`SpecError` (or whatever the
plugin raised) on the first violation and returns what it observed, for further assertions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from hpt_kit.core.spec import (
    ConvertRequest,
    Embodiment,
    Episode,
    RolloutRequest,
    RolloutResult,
    SpecError,
    converted_spec,
    validate_episode,
    validate_spec,
)


class RandomController:
    """Uniform random actions inside the embodiment's bounds."""

    def __init__(self, embodiment: Embodiment, seed: int = 0):
        self._low = np.asarray(embodiment.action.low, dtype=np.float32)
        self._high = np.asarray(embodiment.action.high, dtype=np.float32)
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self.calls = 0

    def reset(self) -> None:
        self._rng = np.random.default_rng(self._seed)

    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        return self._rng.uniform(self._low, self._high).astype(np.float32)


@dataclass(frozen=True)
class ContractReport:
    """What :func:`check_embodiment` observed, for a plugin's own further assertions."""

    episodes: list[Episode]  # the converted episodes, validated, with the dtypes the kit stores
    rollout: RolloutResult  # the random controller's rollouts
    controller_calls: int  # how often the rollout asked the controller for an action
    rendered: list[Episode] = field(default_factory=list)  # an optional camera's rendered episode


def registered_embodiments(plugin: object, name: str = "plugin") -> dict[str, Embodiment]:
    """What ``plugin`` (a module or object with ``hpt_register_embodiments``) registers, through the
    kit's own validating registrar, without loading any other plugin. A problem the registrar would
    record against the plugin is raised instead, so a plugin's tests fail on it."""
    from hpt_kit.core.registry import load_registry

    registry = load_registry(load_entrypoints=False, extra_plugins=[(name, plugin)])
    problems = [f"{e.item or name}: {e.reason}" for e in registry.errors if e.plugin == name]
    if problems:
        raise SpecError(f"plugin {name!r}: " + "; ".join(problems))
    return {n: registry.embodiment(n) for n in registry.embodiments}


def check_embodiment(emb: Embodiment, episodes: int = 2, rollout_episodes: int = 2, seed: int = 0) -> ContractReport:
    """Check ``emb`` as the kit will use it, raising on the first violation.

    1. The spec (:func:`~hpt_kit.core.spec.validate_spec`): name, sizes, action bounds, stems that
       read declared modalities, horizons, callables.
    2. ``convert_dataset(ConvertRequest(episodes, seed))`` (no rendering) yields exactly ``episodes``
       episodes, each with every declared field and no other, time-major, the right per-step shapes,
       numeric and finite (``image`` uint8), as ``hpt-kit convert`` validates them; instructions are
       encoded as conversion encodes them. An optional camera (``camera_optional``) must be absent
       here, and present in one more episode converted with ``render=True``.
    3. ``rollout`` drives a :class:`RandomController` (uniform actions inside the action bounds) for
       ``rollout_episodes`` episodes, calls it at least once, and returns a ``RolloutResult`` whose
       success rate lies in [0, 1] over exactly that many episodes.

    Returns a :class:`ContractReport`. It does not check that the expert succeeds or that the
    episodes respect ``max_episode_steps``; a plugin's own tests should.
    """
    validate_spec(emb)
    converted = _converted(emb, episodes, seed, render=False)
    rendered = _converted(emb, 1, seed, render=True) if emb.camera_optional else []
    controller = RandomController(emb, seed)
    result = emb.rollout(controller, RolloutRequest(episodes=rollout_episodes, seed=seed))
    if not isinstance(result, RolloutResult):
        raise SpecError(f"embodiment {emb.name!r}: rollout returned {type(result).__name__}, not RolloutResult")
    if not 0.0 <= result.success_rate <= 1.0 or len(result.successes) != rollout_episodes:
        raise SpecError(
            f"embodiment {emb.name!r}: rollout gave success_rate {result.success_rate} over "
            f"{len(result.successes)} episodes, expected a rate in [0, 1] over {rollout_episodes}"
        )
    if controller.calls == 0:
        raise SpecError(f"embodiment {emb.name!r}: rollout never called the controller")
    if emb.rollout_envs is not None:
        check_rollout_envs(emb, RolloutRequest(episodes=rollout_episodes, seed=seed), result)
    return ContractReport(converted, result, controller.calls, rendered)


def _converted(emb: Embodiment, episodes: int, seed: int, render: bool) -> list[Episode]:
    request = ConvertRequest(episodes=episodes, seed=seed, render=render)
    stream = emb.convert_dataset(request)
    language = emb.observation.language
    if language is not None and language.encoder:  # instructions are encoded as conversion does
        from hpt_kit.core.language import instructions_for, with_language

        stream = with_language(emb.name, stream, instructions_for(language), request.notes)
    spec = converted_spec(emb, render)
    converted = [validate_episode(spec, i, ep) for i, ep in enumerate(stream)]
    if len(converted) != episodes:
        raise SpecError(f"embodiment {emb.name!r}: asked for {episodes} episodes, convert_dataset gave {len(converted)}")
    return converted


def check_rollout_envs(emb: Embodiment, request: RolloutRequest, expected: RolloutResult) -> None:
    """``rollout_envs`` must pickle (worker processes receive it) and, played here episode by episode
    as a worker plays them, give ``rollout``'s results for the same request and random controller."""
    import pickle

    from hpt_kit.rollout import RolloutEnvs, evaluate_episode, outcomes_result

    envs = emb.rollout_envs(request)
    where = f"embodiment {emb.name!r}: rollout_envs"
    if not isinstance(envs, RolloutEnvs) or envs.name != emb.name or not envs.sources:
        raise SpecError(f"{where} must return hpt_kit.rollout.RolloutEnvs named {emb.name!r} with at least one source")
    try:
        pickle.dumps(envs)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means workers cannot get it
        raise SpecError(f"{where} does not pickle ({type(exc).__name__}: {exc}); use module-level functions") from None
    built = [source.make() for source in envs.sources]
    try:
        n = len(built)
        outcomes = [
            evaluate_episode(emb.name, request, built[k % n], RandomController(emb, request.seed), k, n,
                             envs.sources[k % n].name, envs.sources[k % n].key)
            for k in range(request.episodes)
        ]
    finally:
        for env in built:
            close = getattr(env, "close", None)
            if callable(close):
                close()
    got = outcomes_result(outcomes, envs.details)
    if (got.successes, got.returns, got.episode_lengths, dict(got.details)) != (
        expected.successes, expected.returns, expected.episode_lengths, dict(expected.details)
    ):
        raise SpecError(
            f"{where} gave other episodes than rollout for the same request: returns {got.returns} "
            f"vs {expected.returns}, lengths {got.episode_lengths} vs {expected.episode_lengths}"
        )
