"""Recipes: the schema of a run's TOML file (sections, defaults, validation).

Reading and writing go through :mod:`hpt_kit.core.config`. An unknown key, a value of the wrong type
or a missing required key is a :class:`RecipeError` whose one-line message names the file and the key.
Command-line options override recipe values through ``dataclasses.replace`` and never write back into
the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hpt_kit.core import config
from hpt_kit.core.config import NOT_A_KEY, ConfigError, from_data, to_data, to_toml
from hpt_kit.core.presets import PRESETS
from hpt_kit.core.spec import check_arch

T = TypeVar("T")


class RecipeError(ConfigError):
    """A recipe that does not validate: ``<file>: <key>: <what to change>``."""


@dataclass(frozen=True)
class RunSection:
    name: str = "run"
    seed: int = 0
    out: str = ""  # run directory; default runs/<recipe name>


@dataclass(frozen=True)
class TrunkSection:
    preset: str = "small"  # a name from hpt_kit.models.trunk.PRESETS, or "custom"
    embed_dim: int = 0  # only for preset = "custom"
    num_blocks: int = 0
    num_heads: int = 0

    def __post_init__(self) -> None:
        if self.preset != "custom" and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}, custom")
        if self.preset == "custom" and min(self.embed_dim, self.num_blocks, self.num_heads) < 1:
            raise ValueError("preset 'custom' needs embed_dim, num_blocks and num_heads >= 1")


@dataclass(frozen=True)
class DatasetEntry:
    embodiment: str
    weight: float = 1.0  # relative sampling weight in the pre-training mixture
    episodes: int = 100  # episodes to convert when the dataset does not exist yet
    path: str = ""  # default: the dataset root (data/convert.dataset_root: $HPT_KIT_DATA, data/ in the kit's checkout, else ~/.cache)
    max_episodes: int = 0  # use only the first N episodes (0 = all), e.g. K demonstrations
    # The held-out episodes, named by index (among the first max_episodes); empty: train.val_fraction
    # of them, drawn with the run's seed.
    val_episodes: tuple[int, ...] = ()
    convert: bool = True  # convert the dataset if it is missing
    # Overrides of the embodiment's own spec for this run (0 / "" / empty = keep the embodiment's).
    observation_horizon: int = 0
    action_horizon: int = 0
    head: str = ""  # head kind by name, e.g. "mlp"
    head_options: dict[str, Any] = field(default_factory=dict)
    # Stem option overrides by the modality the stem reads, e.g. {image = {train_encoder = false}}.
    stem_options: dict[str, Any] = field(default_factory=dict)
    # Encode camera frames once at conversion with this frozen network (as `hpt-kit convert
    # --image-encoder`): a torchvision ResNet name such as "resnet18"; "" keeps raw frames only.
    image_encoder: str = ""
    image_encoder_weights: str = "imagenet"  # "imagenet", "none" or a .pth/.safetensors file
    image_encoder_resize: int = 0  # resize frames to N x N before the encoder; 0 = as rendered
    # Ask the converter to render camera frames (`hpt-kit convert --render`): needed for an optional
    # camera (Embodiment.camera_optional) trained end to end; image_encoder renders anyway.
    render: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight must be a finite number > 0, got {self.weight}")
        if self.episodes < 1 or self.max_episodes < 0:
            raise ValueError("episodes must be >= 1 and max_episodes >= 0")
        if any(e < 0 for e in self.val_episodes) or len(set(self.val_episodes)) != len(self.val_episodes):
            raise ValueError(f"val_episodes must be distinct episode indices >= 0, got {list(self.val_episodes)}")
        if self.observation_horizon < 0 or self.action_horizon < 0:
            raise ValueError("observation_horizon and action_horizon must be >= 0 (0 keeps the embodiment's)")
        bad = [k for k, v in self.stem_options.items() if not isinstance(v, dict)]
        if bad:
            raise ValueError(f"stem_options.{bad[0]} must be a table of options for that modality's stem")
        if self.image_encoder:
            check_arch(self.image_encoder)
        if self.image_encoder_resize < 0:
            raise ValueError(f"image_encoder_resize must be >= 0, got {self.image_encoder_resize}")


@dataclass(frozen=True)
class AugmentSection:
    """Random image augmentation of training batches (``[train.augment]``; torchvision.transforms.v2,
    extra hpt-kit[vision]). Each sample draws its own parameters, shared by its history steps and
    camera views; validation and rollouts see the frames as they are. Every default is "off"."""

    crop_scale: float = 1.0  # random resized crop keeping this share of the area or more; 1 = off
    rotation: float = 0.0  # random rotation within +- this many degrees
    brightness: float = 0.0  # colour jitter factors (torchvision ColorJitter); 0 = off
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0  # at most 0.5

    def __post_init__(self) -> None:
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if min(self.rotation, self.brightness, self.contrast, self.saturation, self.hue) < 0 or self.hue > 0.5:
            raise ValueError("rotation, brightness, contrast, saturation and hue must be >= 0 (hue <= 0.5)")

    @property
    def enabled(self) -> bool:
        return self != AugmentSection()


PARALLEL = ("ddp", "fsdp")
MIX = ("step", "batch")
PRECISION = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainSection:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    val_fraction: float = 0.1  # share of episodes held out for validation
    # Fewest episodes held out when val_fraction > 0, as long as two thirds still train: an interval
    # over held-out episodes needs several (`hpt-kit transfer` without a recipe uses 3).
    val_min_episodes: int = 1
    val_every: int = 200
    val_batches: int = 8
    checkpoint_every: int = 500
    keep_checkpoints: int = 3  # newest step folders kept (latest always kept)
    log_every: int = 20
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    # torch's compute threads; 0: the cores divided by the kit training processes running on the
    # machine, re-checked as they come and go (hpt_kit/train/threads.py)
    threads: int = 0
    # Under torchrun: "ddp" replicates the network on every rank; "fsdp" shards parameters, gradients
    # and optimiser state across ranks (each trunk block its own unit), for trunks that do not fit twice.
    parallel: str = "ddp"
    compile: bool = False  # torch.compile the training step (one graph per embodiment)
    # Arithmetic of the training step's forward pass: "auto" is bfloat16 autocast on a GPU and full
    # fp32 on the CPU; "fp32" full precision everywhere; "bf16" bfloat16 autocast on the CPU too
    # (processors with bf16 instructions run its matrix products about twice as fast; the loss curve
    # is no longer the fp32 one). Weights, gradients and the optimiser stay fp32.
    precision: str = "auto"
    # Probability that a training sample sees a shortened observation history (its oldest steps
    # replaced by the oldest one kept, as at an episode's start); 0 = off. Only matters for H > 1.
    history_mask: float = 0.0
    # "step": each step trains one embodiment, drawn by mixture weight. "batch": each sample of a step
    # draws its embodiment by weight; every embodiment's stems run on its slice, the trunk on all the
    # token sequences in one pass (padded and masked where their lengths differ), each head on its slice.
    mix: str = "step"
    # Datasets larger than memory: read training windows from stream_blocks stretches of steps kept
    # in memory, one replaced every stream_refresh steps by a background read, instead of loading every
    # dataset whole. The stretches (and the one being read) share stream_memory_mb per dataset, so
    # memory stays the same whatever the datasets' size. stream_refresh = 0 swaps a stretch in
    # whenever the disk delivers one: never waits, but a resumed run no longer draws exactly the
    # samples the uninterrupted one would.
    stream: bool = False
    stream_memory_mb: float = 512.0
    stream_blocks: int = 8
    stream_refresh: int = 4
    # Reading processes shared by all streamed datasets (0: half the cores, 1 to 8), so that start-up
    # time and memory do not grow with the number of datasets; never changes which samples are drawn.
    stream_readers: int = 0
    # Steps whose loss or gradient is not finite are not applied. 0: the first one stops the run with
    # an error naming the step and embodiment (the last checkpoint is the last good state); N > 0:
    # up to N such steps are skipped (each logged) before the run stops.
    skip_nonfinite: int = 0
    augment: AugmentSection = field(default_factory=AugmentSection)

    def __post_init__(self) -> None:
        for key in ("lr", "weight_decay", "min_lr_ratio", "grad_clip"):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"{key}: must be a finite number, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"weight_decay and grad_clip must be >= 0 (grad_clip 0 = off), got {self.weight_decay} and {self.grad_clip}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.skip_nonfinite < 0 or self.val_batches < 1:
            raise ValueError("warmup_steps and skip_nonfinite must be >= 0, val_batches >= 1")
        if not self.stream_memory_mb > 0 or self.stream_blocks < 1 or self.stream_refresh < 0 or self.stream_readers < 0:
            raise ValueError("stream_memory_mb must be > 0, stream_blocks >= 1, stream_refresh >= 0 and stream_readers >= 0")
        if self.mix not in MIX:
            raise ValueError(f"mix must be one of {', '.join(MIX)}, got {self.mix!r}")
        if self.precision not in PRECISION:
            raise ValueError(f"precision must be one of {', '.join(PRECISION)}, got {self.precision!r}")
        if self.parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {', '.join(PARALLEL)}, got {self.parallel!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = automatic), got {self.threads}")
        if not 0 <= self.history_mask <= 1:
            raise ValueError(f"history_mask is a probability in [0, 1], got {self.history_mask}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_min_episodes < 1:
            raise ValueError(f"val_min_episodes must be >= 1, got {self.val_min_episodes}")
        if min(self.val_every, self.checkpoint_every, self.log_every, self.keep_checkpoints) < 1:
            raise ValueError("val_every, checkpoint_every, log_every and keep_checkpoints must be >= 1")


@dataclass(frozen=True)
class TransferSection:
    trunk: str = ""  # run dir, checkpoint folder or hf://OWNER/REPO[@REVISION]
    freeze_trunk: bool = True
    # The scratch baseline: no pre-trained trunk; the [trunk] preset, randomly initialised, trains
    # with the new stems and heads. Checkpoints record from_scratch = true. Excludes trunk.
    from_scratch: bool = False
    # LoRA adapters of this rank on the frozen trunk's linear maps (extra hpt-kit[lora]); 0 = none.
    lora_rank: int = 0
    lora_alpha: float = 0.0  # adapters are scaled by alpha / rank; 0 = 2 * rank
    # The trunk's learning rate as a fraction of train.lr while it trains (fine-tuned, or the scratch
    # baseline's): 0.1 lets the new stem and head learn fast while the pre-trained trunk moves slowly.
    trunk_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.trunk_lr_scale < float("inf"):
            raise ValueError(f"trunk_lr_scale must be a finite number > 0 (1 = train.lr), got {self.trunk_lr_scale}")
        if self.lora_rank < 0 or self.lora_alpha < 0:
            raise ValueError("lora_rank and lora_alpha must be >= 0 (lora_rank 0 = no adapters)")
        if self.lora_rank and not (self.trunk and self.freeze_trunk):
            raise ValueError("lora_rank needs a pre-trained trunk, frozen: set trunk and freeze_trunk = true")


@dataclass(frozen=True)
class EvalSection:
    episodes: int = 20
    seed: int = 1000  # rollout seeds start here, apart from the conversion seeds
    execute_steps: int = 0  # steps of each predicted chunk executed before re-planning; 0 = all
    # m of temporal ensembling (predict every step, average the overlapping chunks with weights
    # exp(-m * i), oldest first); 0 = off. ACT uses 0.01. Excludes execute_steps.
    temporal_ensemble: float = 0.0

    def __post_init__(self) -> None:
        if self.execute_steps < 0:
            raise ValueError(f"execute_steps must be >= 0 (0 = the whole chunk), got {self.execute_steps}")
        if not 0 <= self.temporal_ensemble < float("inf"):
            raise ValueError(f"temporal_ensemble must be a finite number >= 0 (0 = off), got {self.temporal_ensemble}")
        if self.temporal_ensemble > 0 and self.execute_steps > 0:
            raise ValueError("set execute_steps or temporal_ensemble, not both: ensembling replans every step")


@dataclass(frozen=True)
class LogSection:
    # Besides metrics.jsonl (the record of truth), also write the same events as TensorBoard event
    # files in <run>/tensorboard (extra hpt-kit[track]): losses, lr, samples/s, validation per
    # embodiment, the recipe as hyperparameters.
    tensorboard: bool = False
    # "offline" or "online": the same records as a Weights & Biases run in <run>/wandb (extra
    # hpt-kit[track]); "" = off. A resumed run continues the W&B run whose id <run>/wandb/run-id holds.
    wandb: str = ""
    wandb_project: str = "hpt-kit"

    def __post_init__(self) -> None:
        if self.wandb not in ("", "offline", "online"):
            raise ValueError(f"wandb must be \"offline\", \"online\" or \"\" (off), got {self.wandb!r}")
        if not self.wandb_project:
            raise ValueError("wandb_project must not be empty")


@dataclass(frozen=True)
class Recipe:
    datasets: tuple[DatasetEntry, ...]
    run: RunSection = field(default_factory=RunSection)
    trunk: TrunkSection = field(default_factory=TrunkSection)
    train: TrainSection = field(default_factory=TrainSection)
    transfer: TransferSection = field(default_factory=TransferSection)
    eval: EvalSection = field(default_factory=EvalSection)
    log: LogSection = field(default_factory=LogSection)
    source: str = field(default="", metadata=NOT_A_KEY)  # the file it came from

    def to_dict(self) -> dict[str, Any]:
        """Every setting (not the source), as plain data: stored in checkpoints, written as TOML."""
        return to_data(self)


@contextlib.contextmanager
def _as_recipe_error(prefix: str = "") -> Iterator[None]:
    """Config errors from recipes surface as :class:`RecipeError`, the class the CLI and experiments catch."""
    try:
        yield
    except ConfigError as exc:
        raise RecipeError(f"{prefix}{exc}") from None


def parse_table(cls: type[T], table: dict[str, Any], where: str) -> T:
    """One recipe table as the dataclass ``cls`` (see :func:`hpt_kit.core.config.from_data`)."""
    with _as_recipe_error():
        return from_data(cls, table, where)


def read_toml(path: str | Path, what: str = "recipe") -> dict[str, Any]:
    """A TOML file as a dict, or a RecipeError naming the file."""
    with _as_recipe_error():
        return config.read_toml(path, what)


def planned_eval(description: Mapping[str, Any], where: str) -> EvalSection:
    """The ``[eval]`` section a checkpoint's run recorded (its defaults when it recorded none)."""
    return parse_table(EvalSection, dict(description.get("recipe", {}).get("eval", {})), where)


def parse_recipe(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """A recipe from its TOML tables; every error names ``source`` and the key."""
    with _as_recipe_error(f"{source}: "):
        if "datasets" not in data:
            raise ConfigError("datasets: required key is missing (add at least one [[datasets]] table)")
        if not isinstance(data["datasets"], list) or not data["datasets"]:
            raise ConfigError("datasets: must be a non-empty list of [[datasets]] tables")
        known = [f.name for f in dataclasses.fields(Recipe) if config.is_key(f)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown section (known: run, trunk, datasets, train, transfer, eval, log)")
        recipe = from_data(Recipe, data)
        names = [d.embodiment for d in recipe.datasets]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"datasets: embodiment {sorted(dup)[0]!r} is listed twice")
    return dataclasses.replace(recipe, source=source)


def load_recipe(path: str | Path) -> Recipe:
    return parse_recipe(read_toml(path), str(path))


def recipe_to_toml(recipe: Recipe) -> str:
    """The resolved recipe as TOML (written into every run directory)."""
    return to_toml(recipe.to_dict())


# What a resumed run may change: how long it runs (the cosine schedule stretches to the new
# train.steps), how it logs, validates, checkpoints, evaluates and streams, where it runs, and where
# an unchanged dataset lives. Anything else (the trunk, the datasets and their options, the seed and
# split, the optimiser and batch settings, transfer) would leave the checkpoint's model or data
# disagreeing with the recipe, so resuming refuses it and names the keys.
RESUMABLE_CHANGES = (
    "run.name", "run.out",
    "train.steps", "train.log_every", "train.val_every", "train.val_batches", "train.checkpoint_every",
    "train.keep_checkpoints", "train.device", "train.threads", "train.compile", "train.precision", "train.parallel",
    "train.skip_nonfinite",
    "train.stream", "train.stream_memory_mb", "train.stream_blocks", "train.stream_refresh", "train.stream_readers",
    "eval.*", "log.*",
    "datasets[].episodes", "datasets[].convert", "datasets[].path",
)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def _resumable(key: str) -> bool:
    general = re.sub(r"\[\d+\]", "[]", key)
    return any(general == p or (p.endswith(".*") and general.startswith(p[:-1])) for p in RESUMABLE_CHANGES)


def changed_settings(saved: Mapping[str, Any], recipe: Recipe) -> tuple[list[str], list[str]]:
    """The keys whose values differ between a checkpoint's recipe and ``recipe``: (refused, allowed).
    A key the saved recipe lacks (written by an older kit) counts as its default."""
    try:
        old = parse_recipe(dict(saved), "<checkpoint>").to_dict()
    except RecipeError:
        old = dict(saved)
    before, after = _flatten(old), _flatten(recipe.to_dict())
    differ = sorted(k for k in before.keys() | after.keys() if before.get(k, None) != after.get(k, None))
    return [k for k in differ if not _resumable(k)], [k for k in differ if _resumable(k)]
