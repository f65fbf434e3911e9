"""One training loop for pre-training and transfer.

Pre-training builds a fresh trunk with a stem and head per dataset; transfer loads a trunk from a
checkpoint, attaches stems and heads for the recipe's datasets and optionally freezes the trunk. Both
then run the same loop: pick an embodiment by mixture weight (or, with ``mix = "batch"``, one per
sample), sample a batch, one AdamW step with warm-up + cosine learning rate and gradient clipping;
validate, log and checkpoint on schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpt_kit.core.presets import TrunkConfig, trunk_config
from hpt_kit.core.recipe import DatasetEntry, Recipe, RecipeError, TrainSection, recipe_to_toml
from hpt_kit.core.registry import Registry
from hpt_kit.core.spec import EmbodimentData
from hpt_kit.data.convert import convert, default_dataset_path
from hpt_kit.data.sampler import SequenceSampler, make_samplers, mask_history
from hpt_kit.data.store import Dataset
from hpt_kit.data.stream import BlockSampler, Streaming
from hpt_kit.models.hpt import HPT
from hpt_kit.train import distributed
from hpt_kit.weights.checkpoint import (
    CheckpointError,
    describe,
    latest_checkpoint,
    load_training_state,
    read_checkpoint,
    save_run_checkpoint,
)
from hpt_kit.weights.tensors import load_strict, tensor_digest

log = logging.getLogger(__name__)


def lr_at(step: int, cfg: TrainSection) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def open_datasets(
    recipe: Recipe,
    registry: Registry,
    on_convert: Callable[[str, int], Callable[[int, int], None] | None] | None = None,
) -> dict[str, Dataset]:
    """Open every dataset the recipe names, converting missing ones with the recipe's episode count."""
    out: dict[str, Dataset] = {}
    for i, entry in enumerate(recipe.datasets):
        path = Path(entry.path) if entry.path else default_dataset_path(entry.embodiment)
        if not path.exists():
            if not entry.convert:
                raise RecipeError(f"{recipe.source}: datasets[{i}].path: dataset {path} does not exist (convert = false)")
            try:
                embodiment = registry.embodiment(entry.embodiment)
            except KeyError as exc:
                raise RecipeError(f"{recipe.source}: datasets[{i}].embodiment: {exc}") from None
            progress = on_convert(entry.embodiment, entry.episodes) if on_convert else None
            convert(
                embodiment,
                path,
                episodes=entry.episodes,
                seed=recipe.run.seed,
                on_episode=progress,
                image_encoder=entry.image_encoder or None,
                image_encoder_weights=entry.image_encoder_weights,
                image_encoder_resize=entry.image_encoder_resize,
                registry=registry,
            )
        ds = Dataset(path)
        if ds.name != entry.embodiment:
            raise RecipeError(
                f"{recipe.source}: datasets[{i}].path: {path} holds embodiment {ds.name!r}, not {entry.embodiment!r}"
            )
        if entry.image_encoder:
            _check_image_encoder(ds, entry, f"{recipe.source}: datasets[{i}].image_encoder")
        out[entry.embodiment] = ds
    return out


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


def open_metrics(path: Path, start: int):
    """``metrics.jsonl`` for appending from step ``start``: on resume, records an interrupted run
    logged after its last checkpoint are dropped, so no step appears twice."""
    if start == 0 or not path.exists():
        return open(path, "w" if start == 0 else "a")
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= start]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    return open(path, "a")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path
    val_loss: dict[str, float]
    train_loss: float


def _to_torch(batch: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in batch.items()}


def _param_groups(params: list[torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; biases, norms, latents and 1-D tensors are not decayed."""
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@torch.no_grad()
def validate(model: HPT, val: Mapping[str, SequenceSampler | None], cfg: TrainSection, device: torch.device) -> dict[str, float]:
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    for name, sampler in val.items():
        if sampler is None:
            continue
        losses, weights = [], []
        for batch in sampler.batches(cfg.batch_size, limit=cfg.val_batches):
            losses.append(model(name, _to_torch(batch, device)).item())  # forward: FSDP gathers around it
            weights.append(len(batch["action"]))
        out[name] = float(np.average(losses, weights=weights))
    model.train(was_training)
    return out


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


def build_model(
    recipe: Recipe,
    specs: Mapping[str, EmbodimentData],
    stats: Mapping[str, Mapping[str, Any]],
    registry: Registry,
    trunk_from: str | None,
) -> tuple[HPT, dict[str, Any]]:
    """The model for a run: a fresh trunk (pre-training) or one loaded from ``trunk_from`` (transfer)."""
    if trunk_from is None:
        t = recipe.trunk
        config = (
            TrunkConfig(t.embed_dim, t.num_blocks, t.num_heads, "custom") if t.preset == "custom" else trunk_config(t.preset)
        )
        return HPT(config, specs, stats, components=registry), {}
    from hpt_kit.weights.trunks import resolve_trunk

    source = resolve_trunk(trunk_from)
    model = HPT(source.config, specs, stats, components=registry)
    load_strict(model.trunk, source.tensors, f"{source.path} (trunk)")
    digest = source.digest
    # Nothing after loading may re-initialise the trunk: prove the weights are the loaded ones.
    if tensor_digest(model.trunk.state_dict()) != digest:
        raise CheckpointError(f"{source.path}: the trunk changed after loading (sha256 mismatch)")
    info = {
        "trunk_source": str(trunk_from),
        "trunk_source_path": str(source.path),
        "trunk_source_format": source.format,
        "trunk_source_step": source.step,
        "trunk_source_sha256": digest,
    }
    log.info("loaded trunk %s (%s, sha256 %s)", trunk_from, source.format, digest[:12])
    return model, info


def train(
    recipe: Recipe,
    run_dir: Path,
    registry: Registry,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_convert: Callable[[str, int], Callable[[int, int], None] | None] | None = None,
) -> TrainResult:
    """Run (or resume) the recipe into ``run_dir``. ``recipe.transfer.trunk`` set means transfer.

    Under ``torchrun`` every rank runs this: episodes are sharded by rank, each rank draws
    ``batch_size / world`` samples per step, gradients are averaged by DistributedDataParallel, and
    rank 0 alone converts datasets and writes metrics and checkpoints.
    """
    cfg = recipe.train
    run_dir = Path(run_dir)
    world, device = distributed.setup(pick_device(cfg.device))
    try:
        with contextlib.ExitStack() as cleanup:  # streaming samplers' reading processes, however the run ends
            return _train(recipe, run_dir, registry, resume, on_log, on_convert, world, device, cleanup)
    finally:
        distributed.teardown(world)


def _train(recipe, run_dir, registry, resume, on_log, on_convert, world, device, cleanup) -> TrainResult:
    cfg = recipe.train
    torch.manual_seed(recipe.run.seed)
    if cfg.batch_size % world.size:
        raise RecipeError(f"{recipe.source}: train.batch_size {cfg.batch_size} is not divisible by {world.size} processes")
    local_batch = cfg.batch_size // world.size
    ckpt_path = latest_checkpoint(run_dir) if resume else None
    if not resume and latest_checkpoint(run_dir) is not None:
        raise CheckpointError(f"{run_dir}: already holds checkpoints; pass --resume to continue or choose another --out")
    resumed = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    if resumed is not None and resumed.step > cfg.steps:
        raise CheckpointError(f"{run_dir}: its latest checkpoint is at step {resumed.step}, past train.steps = {cfg.steps}")

    # Data: rank 0 converts missing datasets; every rank opens them and takes its shard of episodes.
    if world.is_main:
        datasets = open_datasets(recipe, registry, on_convert)
    distributed.barrier(world)
    if not world.is_main:
        datasets = open_datasets(recipe, registry)
    specs: dict[str, EmbodimentData] = {}
    for i, e in enumerate(recipe.datasets):
        try:
            specs[e.embodiment] = run_spec(datasets[e.embodiment].spec, e)
        except ValueError as exc:
            raise RecipeError(f"{recipe.source}: datasets[{i}].{exc}") from None
    train_s: dict[str, SequenceSampler | BlockSampler] = {}
    val_s: dict[str, SequenceSampler | None] = {}
    stream = Streaming(cfg.stream_memory_mb, cfg.stream_blocks, cfg.stream_refresh) if cfg.stream else None
    for entry in recipe.datasets:
        ds, spec = datasets[entry.embodiment], specs[entry.embodiment]
        train_s[entry.embodiment], val_s[entry.embodiment] = make_samplers(
            ds,
            spec.observation_horizon,
            spec.action_horizon,
            [s.modality for s in spec.stems],
            cfg.val_fraction,
            recipe.run.seed,
            entry.max_episodes or None,
            shard=(world.rank, world.size),
            stream=stream,
        )
        if isinstance(train_s[entry.embodiment], BlockSampler):
            cleanup.callback(train_s[entry.embodiment].close)
    names = [e.embodiment for e in recipe.datasets]
    weights = np.array([e.weight for e in recipe.datasets], dtype=np.float64)
    weights /= weights.sum()

    # Model and optimiser: a frozen trunk is excluded from the optimiser and kept in eval mode.
    transfer = bool(recipe.transfer.trunk)
    # Normaliser statistics of the episodes this run trains on (not its validation episodes).
    stats = {n: train_s[n].stats for n in names}
    try:
        if resumed is None:
            model, source_info = build_model(recipe, specs, stats, registry, recipe.transfer.trunk or None)
        else:  # the checkpoint holds every tensor: no need to fetch the trunk source or encoder weights again
            model = HPT(resumed.trunk_config, specs, stats, registry, pretrained=False)
            source_info = {k: v for k, v in resumed.description.items() if k.startswith("trunk_source")}
    except (KeyError, ValueError) as exc:
        if isinstance(exc, CheckpointError | RecipeError):
            raise
        reason = exc.args[0] if exc.args else exc
        raise RecipeError(f"{recipe.source}: cannot build the model: {reason}") from None
    if resumed is not None:  # whole tensors, before any sharding
        load_strict(model, resumed.tensors(), str(ckpt_path))
    model.to(device)
    frozen = transfer and recipe.transfer.freeze_trunk
    if frozen:
        model.trunk.requires_grad_(False)
    sharded = world.active and cfg.parallel == "fsdp"
    if sharded:
        distributed.shard(model, list(model.trunk.blocks))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(trainable, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    mix_rng = np.random.default_rng(recipe.run.seed)  # the same on every rank: which embodiment
    data_rng = np.random.default_rng([recipe.run.seed, world.rank])  # per rank: which samples

    # Resume: optimiser, step and random state from the latest checkpoint (weights are loaded above).
    start = 0
    if resume and ckpt_path is None:
        log.info("--resume: %s has no checkpoint yet, starting from step 0", run_dir)
    if resumed is not None:
        state = load_training_state(ckpt_path)
        try:
            distributed.load_optimizer_state(model, optimizer, state["optimizer"], sharded)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{ckpt_path}: cannot restore the optimiser state: {exc}") from None
        start = int(state["step"])
        mix_rng.bit_generator.state = json.loads(state["mix_rng"])
        data_states = json.loads(state["data_rng"])
        if len(data_states) == world.size:
            data_rng.bit_generator.state = data_states[world.rank]
        else:  # a different number of processes: fresh, still distinct, streams
            log.warning("resuming with %d processes, saved with %d: new sample streams", world.size, len(data_states))
            data_rng = np.random.default_rng([recipe.run.seed, world.rank, start])
        torch.set_rng_state(state["torch_rng"])
        streams = json.loads(state.get("streams", "[]"))
        if stream is not None and len(streams) == world.size:
            for n, sampler_state in streams[world.rank].items():
                if n in train_s:
                    try:
                        train_s[n].load_state(sampler_state)  # the same stretches as when it stopped
                    except (ValueError, KeyError) as exc:  # the recipe's streaming settings changed
                        log.warning("%s: not restoring the saved stretches (%s): new stretches", n, exc)
        elif stream is not None:
            log.warning("resuming a streamed run without the samplers' saved state: new stretches")
        log.info("resumed %s at step %d", run_dir, start)

    dataset_info = {
        n: {"path": str(ds.path), "num_episodes": ds.num_episodes, "num_steps": ds.num_steps, "notes": ds.notes}
        for n, ds in datasets.items()
    }
    extra = {"mode": "transfer" if transfer else "pretrain", "frozen_trunk": frozen, "world_size": world.size, **source_info}
    counts = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in trainable),
        "trunk": sum(p.numel() for p in model.trunk.parameters()),
    }
    metrics_file = None
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.toml").write_text(recipe_to_toml(recipe))
        metrics_file = open_metrics(run_dir / "metrics.jsonl", start)

    def emit(record: dict[str, Any]) -> None:
        if metrics_file is None:
            return
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        if on_log:
            on_log(record)

    def checkpoint(step: int, val_loss: Mapping[str, float]) -> None:
        data_states = distributed.gather(world, data_rng.bit_generator.state)
        streams = [] if stream is None else distributed.gather(world, {n: t.state() for n, t in train_s.items()})
        tensors, optimizer_state = distributed.full_state(model, optimizer, sharded)  # collective if sharded
        if world.is_main:
            desc = describe(model, step, recipe.to_dict(), dataset_info, {"val_loss": dict(val_loss), **counts}, extra)
            state = {
                "optimizer": optimizer_state,
                "mix_rng": json.dumps(mix_rng.bit_generator.state),
                "data_rng": json.dumps(data_states),
                "streams": json.dumps(streams),
                "torch_rng": torch.get_rng_state(),
                "step": step,
            }
            save_run_checkpoint(run_dir, step, model, desc, state, keep=cfg.keep_checkpoints, tensors=tensors)
        distributed.barrier(world)

    if start == 0:
        emit({"event": "start", **extra, **counts, "embodiments": names, "device": str(device)})
    net = model
    if world.active and not sharded:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=len(names) > 1
        )
    if cfg.compile:  # CUDA graphs on a single GPU; inductor's default elsewhere
        import torch._dynamo.config as dynamo_config

        # One graph per embodiment: its name is a constant of the graph.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 2 * len(names))
        net = torch.compile(net, mode="reduce-overhead" if device.type == "cuda" and not world.active else None)
    model.train()
    if frozen:
        model.trunk.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    mixed = cfg.mix == "batch" and len(names) > 1
    val_loss: dict[str, float] = {}
    last_loss = float("nan")
    window_t, window_n = time.perf_counter(), 0
    try:
        for step in range(start, cfg.steps):
            # Sample by mixture weight: one embodiment for the step, or one per sample (the same on every rank).
            if mixed:
                drawn = {n: int(c) for n, c in zip(names, mix_rng.multinomial(local_batch, weights)) if c}
            else:
                drawn = {names[int(mix_rng.choice(len(names), p=weights))]: local_batch}
            batches = {}
            for n, count in drawn.items():
                raw = train_s[n].sample(count, data_rng)
                if cfg.history_mask > 0:
                    raw = mask_history(raw, train_s[n].obs_fields, cfg.history_mask, data_rng)
                batches[n] = _to_torch(raw, device)
            name = "mixed" if mixed else next(iter(drawn))
            # Step: AdamW on the scheduled learning rate with clipped gradients.
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if cfg.compile:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast:
                loss = net(None, batches) if mixed else net(name, batches[name])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip) if cfg.grad_clip > 0 else None
            optimizer.step()
            window_n += cfg.batch_size
            done = step + 1
            # Log, validate, checkpoint on schedule (and always at the end).
            if done % cfg.log_every == 0 or done == cfg.steps:
                last_loss = distributed.mean(world, loss.detach()).item()
                now = time.perf_counter()
                record = {
                    "step": done,
                    "embodiment": name,
                    **({"samples": drawn} if mixed else {}),
                    "loss": last_loss,
                    "lr": lr,
                    "samples_per_s": window_n / max(now - window_t, 1e-9),
                }
                if grad_norm is not None:  # a DTensor when sharded
                    record["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
                emit(record)
                window_t, window_n = now, 0
            if done % cfg.val_every == 0 or done == cfg.steps:
                val_loss = validate(model, val_s, cfg, device)
                if frozen:
                    model.trunk.eval()
                emit({"step": done, "val_loss": val_loss})
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                checkpoint(done, val_loss)
        final = latest_checkpoint(run_dir)
        assert final is not None  # the last step always checkpoints; a finished run resumes at it
    finally:
        if metrics_file is not None:
            metrics_file.close()
    return TrainResult(run_dir, cfg.steps, final, val_loss, last_loss)
