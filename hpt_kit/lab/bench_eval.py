"""``hpt-kit bench --part eval``: evaluation throughput, serial against worker processes.

An untrained network of the preset's size drives the embodiment (its actions are as good as noise,
so the episodes mostly run to their step limit: the most work an evaluation does). The same
episodes run twice back to back, after one warm-up episode (the first prediction, the simulator
built; forked workers inherit a plugin's cached simulator), once serially in this process (the
plugin's ``rollout``) and once in worker processes with one batched policy (:mod:`hpt_kit.policy.parallel`), and each is reported
in episodes and environment steps per minute. The speed-up depends on the cores free at the time:
on a shared machine, say what else ran.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from hpt_kit.core.presets import trunk_config
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import STATE, RolloutRequest, spec_from_dict
from hpt_kit.episode_workers import default_workers
from hpt_kit.models.hpt import HPT
from hpt_kit.policy import Policy
from hpt_kit.policy.parallel import evaluate

EVAL_EMBODIMENTS = ("metaworld-reach-v3", "robosuite-panda")  # the default: one per simulator suite


def neutral_stats(spec: Any) -> dict[str, Any]:
    """Normaliser statistics that change nothing: the state as it is, actions within their bounds."""
    return {
        "state": {"mean": [0.0] * spec.observation.state_dim, "std": [1.0] * spec.observation.state_dim},
        "action": {"min": list(spec.action.low), "max": list(spec.action.high)},
    }


def bench_eval(preset: str, names: Sequence[str], episodes: int, workers: int | None = None) -> list[dict[str, Any]]:
    """Serial and parallel evaluation speed for each embodiment, on the CPU."""
    registry = load_registry()
    workers = min(workers or default_workers(), episodes)
    records = []
    for name in names:
        emb = registry.embodiment(name)
        if [s.modality for s in emb.stems] != [STATE]:
            raise ValueError(f"bench eval: embodiment {name!r} observes more than its state; choose a state-only one")
        if emb.rollout_envs is None:
            raise ValueError(f"bench eval: embodiment {name!r} gives no rollout_envs, so it evaluates serially only")
        spec = spec_from_dict(emb.to_dict())
        torch.manual_seed(0)
        model = HPT(trunk_config(preset), {name: spec}, {name: neutral_stats(spec)}, registry)
        policy = Policy(model, name)
        request = RolloutRequest(episodes=episodes, seed=0)
        evaluate(emb, policy, RolloutRequest(episodes=1, seed=1), 1)  # warm-up: first prediction, environment built
        runs = {}
        for mode, n in (("serial", 1), ("parallel", workers)):
            t = time.perf_counter()
            result, used = evaluate(emb, policy, request, n)
            seconds = time.perf_counter() - t
            steps = sum(result.episode_lengths)
            runs[mode] = {
                "workers": used,
                "seconds": seconds,
                "episodes_per_min": 60.0 * episodes / seconds,
                "env_steps_per_s": steps / seconds,
                "env_steps": steps,
            }
        records.append(
            {
                "embodiment": name,
                "preset": preset,
                "episodes": episodes,
                **runs,
                "speedup": runs["parallel"]["episodes_per_min"] / runs["serial"]["episodes_per_min"],
            }
        )
    return records
