"""The HPT network: per-embodiment stems and heads around one shared trunk, fully built in __init__."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hpt_kit.embodiment import ACTION, STATE, Embodiment, EmbodimentData
from hpt_kit.models.layers import positional_table
from hpt_kit.models.normalizer import Normalizer
from hpt_kit.models.trunk import Trunk, TrunkConfig
from hpt_kit.registry import Registry, load_registry

Spec = Embodiment | EmbodimentData


def installed_components() -> Registry:
    """Stems, heads and text encoders from the built-ins and installed plugins (embodiment hooks are
    not called)."""
    return load_registry(embodiments=False)


class HPT(nn.Module):
    """observations --stems--> tokens --+positional table--> trunk --> head --> action chunk.

    ``specs`` maps embodiment names to their specs, ``stats`` to their normaliser statistics (the
    dataset's). ``components`` resolves stem and head kinds by name; by default, the installed ones.
    """

    def __init__(
        self,
        trunk: TrunkConfig,
        specs: Mapping[str, Spec],
        stats: Mapping[str, Mapping[str, Any]],
        components: Registry | None = None,
    ):
        super().__init__()
        assert specs, "an HPT model needs at least one embodiment"
        missing = set(specs) - set(stats)
        assert not missing, f"no normaliser statistics for {sorted(missing)}"
        components = components or installed_components()
        width = trunk.embed_dim
        self.trunk_config = trunk
        self.specs: dict[str, Spec] = dict(specs)
        self.trunk = Trunk(trunk)
        self.stems = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.normalizers = nn.ModuleDict()
        max_tokens = 0
        for name, spec in self.specs.items():
            shapes = spec.observation.field_shapes()
            self.stems[name] = nn.ModuleDict(
                {
                    s.modality: components.stem(s.kind)(s, shapes[s.modality], width, spec.observation_horizon)
                    for s in spec.stems
                }
            )
            self.heads[name] = components.head(spec.head.kind)(spec.head, width, spec.action.dim)
            self.normalizers[name] = Normalizer(stats[name])
            # A stem emits spec.num_tokens tokens unless it says otherwise (an image stem: one set per view).
            counts = [getattr(self.stems[name][s.modality], "tokens_out", s.num_tokens) for s in spec.stems]
            max_tokens = max(max_tokens, sum(counts))
        # Constant: computed once, never saved (it is a function of position only).
        self.register_buffer("pos_table", positional_table(max_tokens, width), persistent=False)

    def encode(self, embodiment: str, observation: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw observations, each (B, H, *step_shape) -> trunk tokens (B, L, D)."""
        return self.trunk(self.tokens(embodiment, observation))

    def tokens(self, embodiment: str, observation: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw observations -> the trunk's input: stem tokens plus the positional table, (B, L, D)."""
        spec = self.specs[embodiment]
        norm = self.normalizers[embodiment]
        stems = self.stems[embodiment]
        tokens = []
        for s in spec.stems:
            x = observation[s.modality]
            if s.modality == STATE:
                x = norm.state(x)
            tokens.append(stems[s.modality](x))  # (B, n_i, D)
        x = torch.cat(tokens, dim=1)  # (B, L, D)
        return x + self.pos_table[:, : x.shape[1]]

    def forward(self, embodiment: str | None, batch: Mapping[str, Any]) -> torch.Tensor:
        """The training loss (what ``DistributedDataParallel`` wraps): :meth:`loss` of one
        embodiment's batch, or with ``embodiment=None`` :meth:`loss_mixed` of a batch per embodiment."""
        if embodiment is None:
            return self.loss_mixed(batch)
        return self.loss(embodiment, batch)

    def loss(self, embodiment: str, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of the embodiment's head on one batch (raw observations and actions)."""
        features = self.encode(embodiment, batch)
        target = self.normalizers[embodiment].action(batch[ACTION])  # (B, K, A)
        return self.heads[embodiment].loss(features, target)

    def loss_mixed(self, batches: Mapping[str, Mapping[str, torch.Tensor]]) -> torch.Tensor:
        """One step over several embodiments' batches at once: each embodiment's stems on its slice,
        all token sequences through the trunk in one pass (padded and masked where their lengths
        differ), then each head on its slice. Equals the sample-weighted mean of the per-embodiment
        losses."""
        names = list(batches)
        tokens = [self.tokens(n, batches[n]) for n in names]  # (B_i, L_i, D) each
        sizes = [t.shape[0] for t in tokens]
        lengths = [t.shape[1] for t in tokens]
        longest = max(lengths)
        mask = None
        if min(lengths) != longest:
            tokens = [torch.nn.functional.pad(t, (0, 0, 0, longest - t.shape[1])) for t in tokens]
            mask = torch.cat(
                [torch.arange(longest, device=t.device).expand(b, longest) >= n for t, b, n in zip(tokens, sizes, lengths)]
            )  # (sum B_i, L), True = padding
        features = self.trunk(torch.cat(tokens), key_padding_mask=mask)  # (sum B_i, L, D)
        total = sum(sizes)
        loss = features.new_zeros(())
        for name, part, n in zip(names, features.split(sizes), lengths):
            target = self.normalizers[name].action(batches[name][ACTION])
            loss = loss + self.heads[name].loss(part[:, :n], target) * (part.shape[0] / total)
        return loss

    def predict(self, embodiment: str, observation: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw observations -> action chunk in the robot's units, (B, action_horizon, action_dim)."""
        features = self.encode(embodiment, observation)
        return self.normalizers[embodiment].unaction(self.heads[embodiment].predict(features))

    def stats(self) -> dict[str, dict]:
        return {name: norm.stats() for name, norm in self.normalizers.items()}
