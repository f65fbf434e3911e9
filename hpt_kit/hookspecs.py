"""The whole extension surface of hpt-kit.

A plugin is a module (or object) with functions marked ``@hpt_kit.hookimpl`` whose names match the
specs below, exposed through a Python entry point in the group ``hpt_kit``::

    [project.entry-points.hpt_kit]
    my_arm = "hpt_kit_my_arm.plugin"

Every hook receives a *registrar* and adds typed objects to it; the registrar validates them in one
place and reports what is wrong by plugin and name, so a broken plugin never takes the others down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from hpt_kit.core.registry import (
        ComponentRegistrar,
        EmbodimentRegistrar,
        ExporterRegistrar,
        ImporterRegistrar,
        TextEncoderRegistrar,
    )

PROJECT = "hpt_kit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hpt_register_embodiments(registry: EmbodimentRegistrar) -> None:
    """Register the embodiments this plugin provides.

    Called once per plugin when the kit builds its registry (every ``hpt-kit`` command that needs
    embodiments). Call ``registry.add(Embodiment(...))`` for each robot. An invalid spec or a name
    another plugin already took is reported against this plugin and skipped; the plugin's other
    embodiments still register. Return nothing.
    """


@hookspec
def hpt_register_stems(registry: ComponentRegistrar) -> None:
    """Register stem builders by name (``registry.add("mlp", builder)``).

    Called once per plugin when a model is built or components are listed. A builder is called as
    ``builder(spec: StemSpec, input_shape: tuple[int, ...], width: int, observation_horizon: int)`` and
    returns an ``nn.Module`` mapping a (B, H, *input_shape) tensor to (B, n, width) tokens, where n is
    the module's ``tokens_out`` attribute if it has one (e.g. one set of tokens per camera view), else
    ``spec.num_tokens``. Kind-specific settings are ``spec.options``; reject unknown keys (see
    ``hpt_kit.core.config.parse_options``). The kit's own stems register through this hook too.
    """


@hookspec
def hpt_register_heads(registry: ComponentRegistrar) -> None:
    """Register head builders by name (``registry.add("mlp", builder)``).

    Called once per plugin when a model is built or components are listed. A builder is called as
    ``builder(spec: HeadSpec, width: int, action_dim: int)`` and returns an ``nn.Module`` with
    ``loss(features, actions) -> scalar`` and ``predict(features) -> (B, action_horizon, action_dim)``,
    where ``features`` are the trunk's output tokens (B, L, width) and ``actions`` are normalised
    (B, action_horizon, action_dim). The kit's own heads register through this hook too.
    """


@hookspec
def hpt_register_text_encoders(registry: TextEncoderRegistrar) -> None:
    """Register text encoders by name (``registry.add("hash-ngram", builder)``).

    Called once per plugin when the kit builds its registry (converting a dataset or building a policy
    whose spec has a ``language`` modality, listing components). A builder is called with no arguments
    when an encoder is needed, and returns an object with ``dim`` (int: the width of every vector),
    ``sentence(texts) -> (N, dim)`` (one pooled vector per text) and ``tokens(texts) -> [(n_i, dim)]``
    (one vector per token, n_i >= 1), float arrays; the kit pads or truncates per-token output to the
    spec's ``LanguageSpec.tokens``. A name goes into specs, so it is lowercase (``my-encoder``); an
    invalid or duplicate name is reported against this plugin and skipped. The kit's own
    ``hash-ngram`` encoder registers through this hook too. Return nothing.
    """


@hookspec
def hpt_register_importers(registry: ImporterRegistrar) -> None:
    """Register dataset importers (``registry.add(importer)``), one per format.

    Called once per plugin when the kit builds its registry (``hpt-kit import``, ``hpt-kit list``). An
    importer is an object with ``name`` (the format on the command line, lowercase: ``lerobot``) and
    the methods ``detect(path) -> bool``, ``describe(path) -> SourceInfo`` and
    ``episodes(path, selection) -> Iterator[SourceEpisode]`` (see ``hpt_kit.core.importer``): it reads
    the format and yields the selected keys of each episode, one at a time; the kit selects keys,
    sizes frames, encodes language, validates, computes statistics and writes the dataset. An invalid
    or duplicate importer is reported against this plugin and skipped. Return nothing.
    """


@hookspec
def hpt_register_exporters(registry: ExporterRegistrar) -> None:
    """Register dataset exporters (``registry.add(exporter)``), one per format.

    Called once per plugin when the kit builds its registry (``hpt-kit data export``, ``hpt-kit
    list``). An exporter is an object with ``name`` (the format on the command line, lowercase:
    ``lerobot``) and the method ``export(source, episodes, out, options)`` (see
    ``hpt_kit.core.exporter``): ``source`` describes the dataset (rate, names, cameras, tasks),
    ``episodes`` yields one ``ExportEpisode`` at a time (state, action, each camera's frames, the
    instruction), and the exporter writes its format into the empty folder ``out``; the kit reads the
    dataset and renames ``out`` into place once ``export`` returns. An invalid or duplicate exporter
    is reported against this plugin and skipped. Return nothing.
    """
