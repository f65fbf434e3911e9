"""Evaluation of a policy in many simulators at once: episodes in worker processes (one simulator
each, :mod:`hpt_kit.episode_workers`), the network run once per control step for all of them.

Each worker's robot has its own closed-loop state (a :meth:`Policy.replica`: history, chunk queue,
temporal ensemble) on the one network; every step the observations of all busy workers go through
:meth:`Policy.observe`, the chunks due are predicted in one batch and each replica's
:meth:`Policy.take` gives its action, as the policy server does for its robots.

Same episodes, same seeds, same loop as serial evaluation (``Embodiment.rollout``). With
``batch=False`` each due chunk is predicted in a call of its own, exactly as :meth:`Policy.act`
does, and the results are bit for bit the serial ones. Batched, they agree only to float rounding
at first: a matrix product over a batch may round differently from the same rows one at a time
(a gemv for one row, a gemm for several; 1e-7 to 1e-3 on a tiny network's chunks), and a simulator
with contacts can grow such a difference over hundreds of steps into a different trajectory (the
same episode of Meta-World reach-v3 returned 903.95 serially, 883.12 batched). Each episode is then
as valid a sample of the policy as the serial one, but not the same sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from hpt_kit.core.spec import Controller, Embodiment, RolloutRequest, RolloutResult
from hpt_kit.episode_workers import default_workers, run_in_workers
from hpt_kit.policy.closed_loop import Policy
from hpt_kit.rollout import outcomes_result


class BatchedPolicy:
    """One :class:`Policy` replica per robot, their due predictions made in one network call (with
    ``batch``, the torch backend uncompiled) or one call each, as :meth:`Policy.act` makes them."""

    def __init__(self, policy: Policy, robots: int, batch: bool = True):
        self.template = policy
        self.replicas = [policy.replica() for _ in range(robots)]
        self.batch = batch and policy.backend == "torch" and policy._compiled is None

    def reset(self, robot: int) -> None:
        self.replicas[robot].reset()

    @torch.inference_mode()
    def act(self, observations: Mapping[int, Mapping[str, Any]]) -> dict[int, np.ndarray]:
        """One action per robot for its observation; one prediction for all robots whose chunk is due."""
        due = [r for r, obs in observations.items() if self.replicas[r].observe(obs)]
        chunks: dict[int, np.ndarray] = {}
        if due and not self.batch:
            chunks = {r: self.replicas[r]._predict()[0].cpu().numpy() for r in due}
        elif due:
            batch = {f: torch.cat([self.replicas[r].history[f] for r in due]) for f in self.template.history}
            predicted = self.template.model.predict(self.template.embodiment, batch).cpu().numpy()  # (B, K, A)
            chunks = dict(zip(due, predicted))
        return {r: self.replicas[r].take(chunks.get(r)) for r in observations}


def parallel_capable(emb: Embodiment, controller: Controller) -> bool:
    """Whether :func:`evaluate` can run this embodiment and controller in workers: the embodiment
    gives ``rollout_envs`` and the controller is an in-process :class:`Policy` (not, say, a policy
    server's client)."""
    return emb.rollout_envs is not None and isinstance(controller, Policy)


def evaluate(
    emb: Embodiment, controller: Controller, request: RolloutRequest, workers: int | None = None, batch: bool = True
) -> tuple[RolloutResult, int]:
    """The embodiment's rollout of ``controller`` and the number of worker processes that ran it:
    ``workers`` (default: the cores this process may use, never more than the episodes) when the
    embodiment and controller allow (:func:`parallel_capable`) and more than one is asked for;
    otherwise the plugin's own serial ``rollout`` in this process, reported as 1. ``batch=False``:
    one network call per due chunk, bit-identical to serial evaluation (see the module's docstring)."""
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = min(workers, request.episodes)
    if workers <= 1 or not parallel_capable(emb, controller):
        return emb.rollout(controller, request), 1
    envs = emb.rollout_envs(request)
    batched = BatchedPolicy(controller, workers, batch)
    outcomes = run_in_workers(envs, request, workers, batched.act, batched.reset)
    return outcomes_result(outcomes, envs.details), workers
