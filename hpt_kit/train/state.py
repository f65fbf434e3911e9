"""What a run must carry across a stop to continue exactly: the step, the optimiser, the random
streams and the streaming samplers' stretches. One object saves and restores all of it, so the
checkpoint's ``training_state.pt`` is written and read in one place."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hpt_kit.data.stream import BlockSampler
from hpt_kit.train import distributed
from hpt_kit.weights.tensors import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """The run's progress. ``mix_rng`` draws embodiments (the same on every rank); ``data_rng`` draws
    samples and history masks (one stream per rank); ``samplers`` are the rank's training samplers,
    whose stretches are saved when they stream."""

    step: int
    optimizer: torch.optim.Optimizer
    mix_rng: np.random.Generator
    data_rng: np.random.Generator
    samplers: Mapping[str, Any]
    skipped: int = 0  # steps not applied because their gradient was not finite

    @classmethod
    def fresh(cls, seed: int, world: distributed.World, optimizer: torch.optim.Optimizer, samplers: Mapping[str, Any]) -> RunState:
        return cls(0, optimizer, np.random.default_rng(seed), np.random.default_rng([seed, world.rank]), samplers)

    def gather(self, world: distributed.World, model: torch.nn.Module, sharded: bool) -> tuple[dict, dict | None]:
        """The whole weights and, on rank 0, the training state to save (``None`` on other ranks).
        Every rank must call it: it gathers each rank's random and sampler state (and the shards)."""
        data_states = distributed.gather(world, self.data_rng.bit_generator.state)
        streamed = {n: s.state() for n, s in self.samplers.items() if isinstance(s, BlockSampler)}
        streams = distributed.gather(world, streamed) if streamed else []
        tensors, optimizer_state = distributed.full_state(model, self.optimizer, sharded)  # collective if sharded
        if not world.is_main:
            return tensors, None
        return tensors, {
            "optimizer": optimizer_state,
            "mix_rng": json.dumps(self.mix_rng.bit_generator.state),
            "data_rng": json.dumps(data_states),
            "streams": json.dumps(streams),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "skipped": self.skipped,
        }

    def restore(self, saved: Mapping[str, Any], world: distributed.World, model: torch.nn.Module, sharded: bool, seed: int, where: str) -> None:
        """Continue from a saved training state (the weights are loaded separately, before sharding)."""
        try:
            distributed.load_optimizer_state(model, self.optimizer, saved["optimizer"], sharded)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{where}: cannot restore the optimiser state: {exc}") from None
        self.step = int(saved["step"])
        self.skipped = int(saved.get("skipped", 0))
        self.mix_rng.bit_generator.state = json.loads(saved["mix_rng"])
        data_states = json.loads(saved["data_rng"])
        if len(data_states) == world.size:
            self.data_rng.bit_generator.state = data_states[world.rank]
        else:  # a different number of processes: fresh, still distinct, streams
            log.warning("resuming with %d processes, saved with %d: new sample streams", world.size, len(data_states))
            self.data_rng = np.random.default_rng([seed, world.rank, self.step])
        torch.set_rng_state(saved["torch_rng"])
        self._restore_streams(json.loads(saved.get("streams", "[]")), world)

    def _restore_streams(self, streams: list[dict[str, Any]], world: distributed.World) -> None:
        streamed = {n: s for n, s in self.samplers.items() if isinstance(s, BlockSampler)}
        if not streamed:
            return
        if len(streams) != world.size:
            log.warning("resuming a streamed run without the samplers' saved state: new stretches")
            return
        for name, sampler_state in streams[world.rank].items():
            if name in streamed:
                try:
                    streamed[name].load_state(sampler_state)  # the same stretches as when it stopped
                except (ValueError, KeyError) as exc:  # the recipe's streaming settings changed
                    log.warning("%s: not restoring the saved stretches (%s): new stretches", name, exc)
