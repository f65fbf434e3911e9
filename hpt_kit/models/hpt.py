"""The HPT network: per-embodiment stems and heads around one shared trunk, fully built in __init__."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hpt_kit.core.presets import TrunkConfig
from hpt_kit.core.registry import Registry
from hpt_kit.core.spec import (
    ACTION,
    HEAD_MEMBERS,
    STATE,
    STEM_MEMBERS,
    EmbodimentData,
    HeadSpec,
    StemSpec,
    missing_members,
)
from hpt_kit.models.layers import positional_table
from hpt_kit.models.normalizer import Normalizer
from hpt_kit.models.trunk import Trunk
from hpt_kit.weights.tensors import load_strict

if TYPE_CHECKING:
    from hpt_kit.weights.checkpoint import Checkpoint

Spec = EmbodimentData  # an Embodiment is one, with its plugin callables


class ComponentError(TypeError):
    """A stem or head that does not keep its contract; the message names the plugin and the member."""


def _accepts(builder: Callable[..., Any], keyword: str) -> bool:
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


def build_stem(
    components: Registry, spec: StemSpec, shape: tuple[int, ...], width: int, horizon: int, pretrained: bool
) -> nn.Module:
    """The stem ``spec.kind`` from its plugin's builder, checked against the :class:`~hpt_kit.core.spec.Stem`
    contract. ``pretrained`` reaches builders that take it (whether to fetch pretrained weights)."""
    builder = components.stem(spec.kind)
    extra = {"pretrained": pretrained} if _accepts(builder, "pretrained") else {}
    stem = builder(spec, shape, width, horizon, **extra)
    _check(stem, "stem", spec.kind, components, STEM_MEMBERS)
    tokens = getattr(stem, "tokens_out", spec.num_tokens)
    if not isinstance(tokens, int) or tokens < 1:
        raise ComponentError(
            f"stem {spec.kind!r} of plugin {components.owner('stem', spec.kind)!r}: tokens_out must be an "
            f"integer >= 1, got {tokens!r}"
        )
    return stem


def build_head(components: Registry, spec: HeadSpec, width: int, action_dim: int) -> nn.Module:
    """The head ``spec.kind`` from its plugin's builder, checked against the
    :class:`~hpt_kit.core.spec.Head` contract."""
    head = components.head(spec.kind)(spec, width, action_dim)
    _check(head, "head", spec.kind, components, HEAD_MEMBERS)
    return head


def _check(obj: object, what: str, kind: str, components: Registry, members: tuple[str, ...]) -> None:
    plugin = components.owner(what, kind)
    if not isinstance(obj, nn.Module):
        raise ComponentError(f"{what} {kind!r} of plugin {plugin!r}: the builder returned {type(obj).__name__}, not a torch nn.Module")
    missing = missing_members(obj, members)
    if missing:
        raise ComponentError(f"{what} {kind!r} of plugin {plugin!r} has no {', '.join(missing)} (a {what} needs {', '.join(members)})")


class HPT(nn.Module):
    """observations --stems--> tokens --+positional table--> trunk --> head --> action chunk.

    ``specs`` maps embodiment names to their specs, ``stats`` to their normaliser statistics (the
    dataset's). ``components`` resolves stem and head kinds by name (``load_registry(embodiments=False)``
    for the installed ones). ``pretrained=False`` builds stems without fetching pretrained encoder
    weights: for a network whose every tensor is loaded right after (see :meth:`from_checkpoint`).
    """

    def __init__(
        self,
        trunk: TrunkConfig,
        specs: Mapping[str, Spec],
        stats: Mapping[str, Mapping[str, Any]],
        components: Registry,
        pretrained: bool = True,
    ):
        super().__init__()
        assert specs, "an HPT model needs at least one embodiment"
        missing = set(specs) - set(stats)
        assert not missing, f"no normaliser statistics for {sorted(missing)}"
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
                    s.modality: build_stem(components, s, shapes[s.modality], width, spec.observation_horizon, pretrained)
                    for s in spec.stems
                }
            )
            self.heads[name] = build_head(components, spec.head, width, spec.action.dim)
            self.normalizers[name] = Normalizer(stats[name])
            # A stem emits spec.num_tokens tokens unless it says otherwise (an image stem: one set per view).
            counts = [getattr(self.stems[name][s.modality], "tokens_out", s.num_tokens) for s in spec.stems]
            max_tokens = max(max_tokens, sum(counts))
        # Constant: computed once, never saved (it is a function of position only).
        self.register_buffer("pos_table", positional_table(max_tokens, width), persistent=False)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, components: Registry) -> HPT:
        """The network exactly as saved: built from the description, then every tensor loaded strictly
        (image encoders are not fetched first: the checkpoint holds their tensors). A checkpoint
        trained with LoRA adapters comes back with them merged into the trunk's weights."""
        from hpt_kit.models.lora import LoraSettings, add_lora, load_lora, merge_lora, read_adapters

        model = cls(checkpoint.trunk_config, checkpoint.specs, checkpoint.stats, components, pretrained=False)
        lora = LoraSettings.from_description(checkpoint.description)
        if lora is None:
            load_strict(model, checkpoint.tensors(), str(checkpoint.weights_path))
            return model
        add_lora(model.trunk, lora)
        load_lora(model, checkpoint.tensors(), read_adapters(checkpoint.path), str(checkpoint.path))
        merge_lora(model.trunk)
        return model

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
        parts = self.encode_mixed(batches)
        total = sum(len(batches[n][ACTION]) for n in parts)
        loss = next(iter(parts.values())).new_zeros(())
        for name, features in parts.items():
            target = self.normalizers[name].action(batches[name][ACTION])
            loss = loss + self.heads[name].loss(features, target) * (features.shape[0] / total)
        return loss

    def predict_mixed(self, observations: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """:meth:`predict` for several embodiments' batches with one trunk pass (the policy server's
        batch across robots): ``{name: (B_i, K_i, A_i)}`` in each robot's units."""
        parts = self.encode_mixed(observations)
        return {n: self.normalizers[n].unaction(self.heads[n].predict(f)) for n, f in parts.items()}

    def encode_mixed(self, observations: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Each embodiment's trunk tokens, (B_i, L_i, D), from one trunk pass over all of them: token
        sequences of different lengths are padded and the padding masked out of attention."""
        names = list(observations)
        tokens = [self.tokens(n, observations[n]) for n in names]  # (B_i, L_i, D) each
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
        return {n: part[:, :length] for n, part, length in zip(names, features.split(sizes), lengths)}

    def predict(self, embodiment: str, observation: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw observations -> action chunk in the robot's units, (B, action_horizon, action_dim)."""
        features = self.encode(embodiment, observation)
        return self.normalizers[embodiment].unaction(self.heads[embodiment].predict(features))

    def stats(self) -> dict[str, dict]:
        return {name: norm.stats() for name, norm in self.normalizers.items()}
