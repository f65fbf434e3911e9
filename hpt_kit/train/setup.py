"""The set-up steps of a run, each a named function the loop calls in order: the checkpoint to resume,
the datasets (converted if missing), the per-run specs, the samplers, the model, and the parallel
wrapping with its optimiser."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpt_kit.core.lock import LockError, dataset_lock
from hpt_kit.core.presets import TrunkConfig, trunk_config
from hpt_kit.core.recipe import DatasetEntry, Recipe, RecipeError, changed_settings
from hpt_kit.core.registry import Registry
from hpt_kit.core.spec import EmbodimentData
from hpt_kit.data.convert import check_dataset, convert, default_dataset_path
from hpt_kit.data.reader import ReaderPool
from hpt_kit.data.sampler import SequenceSampler, make_samplers
from hpt_kit.data.store import Dataset, recover
from hpt_kit.data.stream import BlockSampler, Streaming
from hpt_kit.models.hpt import HPT
from hpt_kit.models.lora import LORA_FILE, LoraSettings, adapters, add_lora, load_adapters, read_adapters
from hpt_kit.models.vision import IMAGENET, EncoderWeightsError
from hpt_kit.train import distributed
from hpt_kit.weights.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    read_checkpoint,
    repair_run,
    step_folders,
)
from hpt_kit.weights.tensors import CheckpointError, load_strict, tensor_digest

log = logging.getLogger(__name__)

OnConvert = Callable[[str, int], Callable[[int, int], None] | None]


def checkpoint_to_resume(run_dir: Path, resume: bool, recipe: Recipe, repair: bool = True) -> Checkpoint | None:
    """The run's latest complete checkpoint when resuming; an error when a new run would overwrite
    one, or when the recipe changed in a way the checkpoint cannot follow (the keys named).

    ``repair`` (the process holding the run's lock): first undo what an interrupted run left, each
    change logged as a warning (:func:`hpt_kit.weights.checkpoint.repair_run`)."""
    if not resume:
        if step_folders(run_dir):
            raise CheckpointError(f"{run_dir}: already holds checkpoints; pass --resume to continue or choose another --out")
        return None
    if repair:
        for change in repair_run(run_dir):
            log.warning("%s: %s", run_dir, change)
    latest = latest_checkpoint(run_dir)
    if latest is None:
        log.info("--resume: %s has no checkpoint yet, starting from step 0", run_dir)
        return None
    resumed = read_checkpoint(latest)
    if resumed.step > recipe.train.steps:
        raise CheckpointError(f"{run_dir}: its latest checkpoint is at step {resumed.step}, past train.steps = {recipe.train.steps}")
    refused, allowed = changed_settings(resumed.description.get("recipe", {}), recipe)
    if "transfer.trunk" in refused and _same_trunk(resumed, recipe.transfer.trunk):  # moved or copied with its run
        refused.remove("transfer.trunk")
        allowed.append("transfer.trunk (the same trunk, by sha256)")
    if refused:
        raise RecipeError(
            f"{recipe.source}: cannot resume {run_dir}: the recipe changed {', '.join(refused)} since its "
            f"checkpoint at step {resumed.step}, which would change the model or its data; start a new run "
            "(another --out) or restore those settings"
        )
    if allowed:
        log.info("--resume: %s continues with changed %s", run_dir, ", ".join(allowed))
    return resumed


def _same_trunk(resumed: Checkpoint, location: str) -> bool:
    """Whether the trunk at ``location`` is the one the resumed run started from (its recorded
    sha256): an experiment folder moved or copied elsewhere names its pre-trained trunk by a new path."""
    recorded = resumed.description.get("trunk_source_sha256")
    if not recorded or not location:
        return False
    from hpt_kit.weights.trunks import resolve_trunk

    try:
        return resolve_trunk(location, option="--trunk-checkpoint").digest == recorded
    except (CheckpointError, OSError, ValueError):  # not readable there: the refusal names transfer.trunk
        return False


def check_same_data(resumed: Checkpoint | None, datasets: Mapping[str, Dataset]) -> None:
    """A resumed run must see the datasets it was trained on: the same episodes and steps."""
    if resumed is None:
        return
    for name, ds in datasets.items():
        was = resumed.description["embodiments"].get(name, {}).get("dataset", {})
        if not was:
            continue
        now = {"num_episodes": ds.num_episodes, "num_steps": ds.num_steps}
        if any(was.get(k) is not None and was[k] != v for k, v in now.items()):
            raise CheckpointError(
                f"{ds.path}: holds {ds.num_episodes} episodes ({ds.num_steps} steps), but the run resumed from "
                f"{resumed.path} trained {name} on {was.get('num_episodes')} ({was.get('num_steps')} steps) "
                f"from {was.get('path')}; give the same dataset or start a new run"
            )


def open_datasets_on_ranks(recipe: Recipe, registry: Registry, world: distributed.World, on_convert: OnConvert | None) -> dict[str, Dataset]:
    """Rank 0 converts missing datasets while the others wait; then every rank opens them. When
    every rank finds every dataset on disk (imported or converted beforehand), all open them at once:
    no rank waits for another."""
    present = all(_dataset_path(entry).exists() for entry in recipe.datasets)
    if all(distributed.gather(world, present)):  # one answer on every rank, so all take the same path
        return open_datasets(recipe, registry)
    if world.is_main:
        datasets = open_datasets(recipe, registry, on_convert)
    distributed.barrier(world)
    return datasets if world.is_main else open_datasets(recipe, registry)


def _dataset_path(entry: DatasetEntry) -> Path:
    return Path(entry.path) if entry.path else default_dataset_path(entry.embodiment)


def open_datasets(recipe: Recipe, registry: Registry, on_convert: OnConvert | None = None) -> dict[str, Dataset]:
    """Open every dataset the recipe names, converting missing ones with the recipe's episode count."""
    out: dict[str, Dataset] = {}
    for i, entry in enumerate(recipe.datasets):
        where = f"{recipe.source}: datasets[{i}]"
        path = _dataset_path(entry)
        recover(path)  # a dataset left between the renames of an interrupted replacement
        if not path.exists():
            try:
                _convert_missing(recipe, entry, path, registry, on_convert, where)
            except LockError:  # another run is converting it: use its result once it is done
                log.warning("%s is being converted by another process; waiting for it", path)
                with dataset_lock(path, wait=float("inf")):
                    pass
                if not path.exists():
                    _convert_missing(recipe, entry, path, registry, on_convert, where)
        ds = Dataset(path)
        if ds.name != entry.embodiment:
            raise RecipeError(f"{where}.path: {path} holds embodiment {ds.name!r}, not {entry.embodiment!r}")
        if entry.embodiment in registry.embodiments:  # a plugin changed since conversion: stop before training
            check_dataset(registry.embodiment(entry.embodiment), ds)
        if entry.image_encoder:
            _check_image_encoder(ds, entry, f"{where}.image_encoder")
        if entry.render and ds.spec.observation.image is None:
            raise RecipeError(f"{where}.render: dataset {path} has no camera frames; convert it again (hpt-kit convert {entry.embodiment} --render --overwrite)")
        out[entry.embodiment] = ds
    return out


def _convert_missing(recipe: Recipe, entry: DatasetEntry, path: Path, registry: Registry, on_convert: OnConvert | None, where: str) -> None:
    if not entry.convert:
        raise RecipeError(f"{where}.path: dataset {path} does not exist (convert = false)")
    try:
        embodiment = registry.embodiment(entry.embodiment)
    except KeyError as exc:
        raise RecipeError(f"{where}.embodiment: {exc}") from None
    convert(
        embodiment,
        path,
        episodes=entry.episodes,
        seed=recipe.run.seed,
        on_episode=on_convert(entry.embodiment, entry.episodes) if on_convert else None,
        render=entry.render,
        image_encoder=entry.image_encoder or None,
        image_encoder_weights=entry.image_encoder_weights,
        image_encoder_resize=entry.image_encoder_resize,
        registry=registry,
    )


def _check_image_encoder(ds: Dataset, entry: DatasetEntry, where: str) -> None:
    """An existing dataset must hold the image features the recipe asks for."""
    from hpt_kit.models.vision import normalize_weights

    feats = ds.spec.observation.image_features
    have = feats.encoder if feats is not None else None
    want = (entry.image_encoder, normalize_weights(entry.image_encoder_weights), entry.image_encoder_resize)
    if have is None or (have.arch, have.weights, have.resize) != want:
        found = "no encoded image features"
        if have is not None:
            found = f"features from {have.arch} (weights {have.weights}, resize {have.resize})"
        raise RecipeError(
            f"{where}: dataset {ds.path} holds {found}, not from {want[0]} (weights {want[1]}, resize {want[2]}); "
            f"convert it again (hpt-kit convert {entry.embodiment} --image-encoder {want[0]} --overwrite ...) "
            "or change the recipe"
        )


def run_specs(recipe: Recipe, datasets: Mapping[str, Dataset]) -> dict[str, EmbodimentData]:
    """Each dataset's spec with its recipe entry's overrides."""
    specs: dict[str, EmbodimentData] = {}
    for i, entry in enumerate(recipe.datasets):
        try:
            specs[entry.embodiment] = run_spec(datasets[entry.embodiment].spec, entry)
        except ValueError as exc:
            raise RecipeError(f"{recipe.source}: datasets[{i}].{exc}") from None
    return specs


def run_spec(spec: EmbodimentData, entry: DatasetEntry) -> EmbodimentData:
    """The dataset's spec with the recipe's per-dataset overrides (horizons, head kind and options,
    stem options by modality)."""
    head = spec.head
    if entry.head and entry.head != head.kind:
        head = dataclasses.replace(head, kind=entry.head, options={})
    head = dataclasses.replace(
        head,
        options={**head.options, **entry.head_options},
        action_horizon=entry.action_horizon or head.action_horizon,
    )
    stems = {s.modality: s for s in spec.stems}
    unknown = sorted(set(entry.stem_options) - set(stems))
    if unknown:
        reads = ", ".join(stems)
        raise ValueError(f"stem_options.{unknown[0]}: no stem reads {unknown[0]!r}; stems read: {reads}")
    for modality, options in entry.stem_options.items():
        stems[modality] = dataclasses.replace(stems[modality], options={**stems[modality].options, **options})
    return dataclasses.replace(
        spec,
        head=head,
        stems=tuple(stems.values()),
        observation_horizon=entry.observation_horizon or spec.observation_horizon,
    )


Samplers = dict[str, SequenceSampler | BlockSampler]


def build_samplers(
    recipe: Recipe, datasets: Mapping[str, Dataset], specs: Mapping[str, EmbodimentData], world: distributed.World, cleanup: contextlib.ExitStack
) -> tuple[Samplers, dict[str, SequenceSampler | None]]:
    """Training and validation samplers per embodiment, split by episode and sharded by rank.
    Streamed datasets share one pool of reading processes (``train.stream_readers``, so start-up
    does not grow with their number); it and the samplers are closed by ``cleanup``, however the run ends."""
    cfg = recipe.train
    stream = Streaming(cfg.stream_memory_mb, cfg.stream_blocks, cfg.stream_refresh) if cfg.stream else None
    readers = ReaderPool(cfg.stream_readers) if cfg.stream else None
    if readers is not None:
        cleanup.callback(readers.close)  # after the samplers' own close (an exit stack runs last in, first out)
    train: Samplers = {}
    val: dict[str, SequenceSampler | None] = {}
    for entry in recipe.datasets:
        name, spec = entry.embodiment, specs[entry.embodiment]
        train[name], val[name] = make_samplers(
            datasets[name],
            spec.observation_horizon,
            spec.action_horizon,
            [s.modality for s in spec.stems],
            cfg.val_fraction,
            recipe.run.seed,
            entry.max_episodes or None,
            shard=(world.rank, world.size),
            stream=stream,
            held_out=entry.val_episodes,
            min_val=cfg.val_min_episodes,
            readers=readers,
        )
        if isinstance(train[name], BlockSampler):
            cleanup.callback(train[name].close)
    return train, val


def build_model(
    recipe: Recipe,
    specs: Mapping[str, EmbodimentData],
    stats: Mapping[str, Mapping[str, Any]],
    registry: Registry,
    resumed: Checkpoint | None,
) -> tuple[HPT, dict[str, Any]]:
    """The run's network and where its trunk came from: every tensor from the checkpoint when resuming
    (nothing fetched), else a fresh trunk (pre-training) or one loaded from ``[transfer] trunk``."""
    try:
        if resumed is not None:
            model = HPT(resumed.trunk_config, specs, stats, registry, pretrained=False)
            load_strict(model, resumed.tensors(), str(resumed.weights_path))  # whole tensors, before any sharding
            return model, {k: v for k, v in resumed.description.items() if k.startswith("trunk_source")}
        if not recipe.transfer.trunk:
            return HPT(_trunk_config(recipe), specs, stats, registry), {}
        return _transfer_model(recipe.transfer.trunk, specs, stats, registry)
    except EncoderWeightsError as exc:
        raise EncoderWeightsError(f"{exc}{_weights_hint(recipe, specs)}") from None
    except (KeyError, ValueError) as exc:
        if isinstance(exc, CheckpointError | RecipeError):
            raise
        reason = exc.args[0] if exc.args else exc
        raise RecipeError(f"{recipe.source}: cannot build the model: {reason}") from None


def _weights_hint(recipe: Recipe, specs: Mapping[str, EmbodimentData]) -> str:
    """The command-line spelling that trains the image stem without those weights."""
    for i, entry in enumerate(recipe.datasets):
        for stem in specs[entry.embodiment].stems:
            if stem.kind == "resnet" and stem.options.get("weights", IMAGENET) == IMAGENET:
                key = f"datasets[{i}].stem_options.{stem.modality}.weights"
                return (
                    f". On the command line: --set {key}=none (random initial weights, nothing to fetch) or "
                    f"--set {key}=/path/to/weights.pth; in a recipe: stem_options = {{{stem.modality} = {{weights = \"none\"}}}}"
                )
    return ""


def _trunk_config(recipe: Recipe) -> TrunkConfig:
    t = recipe.trunk
    return TrunkConfig(t.embed_dim, t.num_blocks, t.num_heads, "custom") if t.preset == "custom" else trunk_config(t.preset)


def _transfer_model(location: str, specs: Mapping[str, EmbodimentData], stats: Mapping[str, Any], registry: Registry) -> tuple[HPT, dict[str, Any]]:
    from hpt_kit.weights.trunks import resolve_trunk

    source = resolve_trunk(location, option="--trunk-checkpoint")
    model = HPT(source.config, specs, stats, registry)
    load_strict(model.trunk, source.tensors, f"{source.path} (trunk)")
    digest = source.digest
    # Nothing after loading may re-initialise the trunk: prove the weights are the loaded ones.
    if tensor_digest(model.trunk.state_dict()) != digest:
        raise CheckpointError(f"{source.path}: the trunk changed after loading (sha256 mismatch)")
    log.info("loaded trunk %s (%s, sha256 %s)", location, source.format, digest[:12])
    return model, {
        "trunk_source": str(location),
        "trunk_source_path": str(source.path),
        "trunk_source_format": source.format,
        "trunk_source_step": source.step,
        "trunk_source_sha256": digest,
    }


def run_mode(recipe: Recipe) -> dict[str, Any]:
    """What a run is, as its checkpoints record it: ``mode`` (pretrain or transfer), ``frozen_trunk``
    and, for the scratch baseline of a transfer, ``from_scratch``."""
    t = recipe.transfer
    if t.from_scratch and t.trunk:
        raise RecipeError(f"{recipe.source}: transfer.from_scratch: a scratch run has no pre-trained trunk; drop transfer.trunk")
    if t.trunk_lr_scale != 1 and ((t.trunk and t.freeze_trunk) or not (t.trunk or t.from_scratch)):
        what = "the trunk is frozen; set transfer.freeze_trunk = false" if t.trunk else "pre-training trains every part at train.lr"
        raise RecipeError(f"{recipe.source}: transfer.trunk_lr_scale = {t.trunk_lr_scale} scales the trunk's learning rate, but {what} (or drop trunk_lr_scale)")
    mode = {"mode": "transfer" if t.trunk or t.from_scratch else "pretrain", "frozen_trunk": bool(t.trunk) and t.freeze_trunk}
    return {**mode, "from_scratch": True} if t.from_scratch else mode


@dataclass
class Parallel:
    """The network the step calls (wrapped for DDP, sharded for FSDP, compiled), and what it trains."""

    net: torch.nn.Module
    trainable: list[torch.nn.Parameter]
    sharded: bool
    trunk: list[torch.nn.Parameter]  # the trainable parameters of the trunk (after sharding: its shards)


def parallelize(model: HPT, recipe: Recipe, world: distributed.World, device: torch.device, frozen: bool) -> Parallel:
    """Place the model: a frozen trunk leaves the trainable set; FSDP shards every trunk block, then
    the network; DDP wraps it (finding unused stems and heads when several embodiments share a run);
    ``compile`` compiles whatever results (one graph per embodiment)."""
    from hpt_kit.train.step import compile_mode

    model.to(device)
    if frozen:
        model.trunk.requires_grad_(False)
        for p in adapters(model.trunk):  # LoRA: the adapters train, the trunk's own tensors stay
            p.requires_grad_(True)
    sharded = world.active and recipe.train.parallel == "fsdp"
    if sharded:
        distributed.shard(model, list(model.trunk.blocks))
    trainable = [p for p in model.parameters() if p.requires_grad]
    trunk = [p for p in model.trunk.parameters() if p.requires_grad]
    net: torch.nn.Module = model
    embodiments = len(recipe.datasets)
    if world.active and not sharded:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=embodiments > 1)
    if recipe.train.compile:
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 2 * embodiments)
        net = torch.compile(net, mode=compile_mode(device, distributed=world.active))
    return Parallel(net, trainable, sharded, trunk)


def attach_lora(model: HPT, recipe: Recipe, resumed: Checkpoint | None) -> dict[str, Any]:
    """``[transfer] lora_rank``: adapters on the trunk, fresh or (resuming) the checkpoint's; returns
    what the checkpoint description records about them (nothing without LoRA)."""
    t = recipe.transfer
    if not t.lora_rank:
        return {}
    if recipe.train.parallel == "fsdp":
        raise RecipeError(f"{recipe.source}: transfer.lora_rank: LoRA runs under ddp or on one process, not fsdp")
    settings = LoraSettings(t.lora_rank, t.lora_alpha or 2.0 * t.lora_rank)
    add_lora(model.trunk, settings)
    if resumed is not None:
        load_adapters(model, read_adapters(resumed.path), str(resumed.path / LORA_FILE))
    return {"lora": settings.to_dict()}


def mixture_weights(recipe: Recipe) -> tuple[list[str], np.ndarray]:
    """Embodiment names in recipe order and their sampling probabilities."""
    names = [e.embodiment for e in recipe.datasets]
    weights = np.array([e.weight for e in recipe.datasets], dtype=np.float64)
    return names, weights / weights.sum()
