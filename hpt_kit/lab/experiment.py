"""The HPT transfer experiment: does a pre-trained trunk make a new robot learn faster and better?

One command pre-trains a trunk on a mixture (or reuses one: ``trunk``), then for every held-out target
embodiment trains on K demonstrations with three methods and several seeds, evaluates each policy in
its simulator and writes a table (JSON and Markdown) and a plot of validation-loss curves:

- ``scratch``: the same architecture, trunk randomly initialised and trained;
- ``frozen``: the pre-trained trunk, frozen (only the new stem and head train);
- ``finetune``: the pre-trained trunk, trained too;
- ``lora`` (when listed): the pre-trained trunk frozen with LoRA adapters of ``lora_rank`` on its
  linear maps, as ``hpt-kit transfer --lora RANK`` trains them.

Every run is an ordinary run directory (resumable, inspectable with ``hpt-kit info``) trained with
the settings of ``hpt-kit transfer`` without a recipe and evaluated as ``hpt-kit eval`` evaluates it
(its recipe's ``[eval]``); results record the simulator versions the datasets were made with.

Reproducible to the episode on one machine: every training of the experiment uses one fixed torch
thread count (``threads``, recorded in the results), since torch's sums round differently between
thread counts and the kit's automatic count follows the other kit processes on the machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.core.importer import NoEnvironment
from hpt_kit.core.overrides import load_section
from hpt_kit.core.presets import PRESETS, TrunkConfig, trunk_config
from hpt_kit.core.recipe import (
    DatasetEntry,
    EvalSection,
    Recipe,
    RecipeError,
    RunSection,
    TransferSection,
    TrunkSection,
    load_recipe,
)
from hpt_kit.core.spec import RolloutRequest
from hpt_kit.core.stats import format_rate
from hpt_kit.data.simulator import simulator
from hpt_kit.lab.comparison import comparison_markdown, paired_comparisons, pooled_rate, stricter
from hpt_kit.lab.paths import portable
from hpt_kit.train.budget import LR, transfer_train

METHODS = ("scratch", "frozen", "finetune")
KNOWN_METHODS = (*METHODS, "lora")


@dataclass(frozen=True)
class Target:
    embodiment: str
    episodes: int = 60  # converted for this target; the first K train (validation comes from them)
    demos: tuple[int, ...] = ()  # K demonstrations, one or a sweep (empty: the experiment's `demos`)


@dataclass(frozen=True)
class ExperimentSection:
    pretrain: str = "recipes/default.toml"  # pre-training recipe (relative paths: to this file)
    # An existing pre-trained trunk to transfer from instead of pre-training (a run directory,
    # checkpoint, published HPT trunk or hf://OWNER/REPO); the scratch runs then copy its architecture
    # and `pretrain` is not used.
    trunk: str = ""
    targets: tuple[Target, ...] = ()
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    demos: tuple[int, ...] = (20,)  # K demonstrations per run; a list sweeps K (`demos = [5, 10, 20]`)
    # Training steps per transfer run; 0: each (target, K) cell gets the step budget of `hpt-kit
    # transfer` for its K demonstrations (hpt_kit.train.budget), the same for every method and seed.
    steps: int = 400
    batch_size: int = 64
    lr: float = LR
    # The fine-tuned trunk's learning rate as a fraction of lr (transfer.trunk_lr_scale of the
    # finetune runs; scratch trains its random trunk at lr).
    trunk_lr_scale: float = 1.0
    # Rollouts per run, from the evaluation seed that `hpt-kit eval` uses ([eval] in a recipe): the
    # same episodes for every method and seed, and `hpt-kit eval RUN` repeats the number.
    eval_episodes: int = EvalSection().episodes
    # Which pre-training data helps the targets: pre-train once more without each of these mixture
    # embodiments and transfer again (every method but scratch), compared run by run with the full mixture.
    leave_out: tuple[str, ...] = ()
    # The `lora` method's adapters: rank, and scale alpha / rank (alpha 0: 2 * rank), as `--lora RANK`.
    lora_rank: int = 8
    lora_alpha: float = 0.0
    # torch threads of every training of the experiment (pre-training, when its recipe leaves them
    # automatic, and every run), fixed so that other processes on the machine cannot change the
    # numbers; 0: $OMP_NUM_THREADS if set, else the cores this process may use, counted at the start.
    threads: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in KNOWN_METHODS]
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r}; known: {', '.join(KNOWN_METHODS)}")
        if "lora" in self.methods:
            TransferSection("<trunk>", lora_rank=self.lora_rank, lora_alpha=self.lora_alpha)  # its checks
            if self.lora_rank < 1:
                raise ValueError(f"methods lists lora: lora_rank must be >= 1, got {self.lora_rank}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = $OMP_NUM_THREADS, else the cores), got {self.threads}")
        if not self.targets:
            raise ValueError("add at least one [[experiment.targets]] table")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0 (0 = the step budget of each cell), got {self.steps}")
        TransferSection(trunk_lr_scale=self.trunk_lr_scale)  # its check of the scale, before any training
        for where, demos in [("demos", self.demos)] + [(f"targets {t.embodiment} demos", t.demos) for t in self.targets]:
            bad = [k for k in demos if k < 1] + [k for k in set(demos) if demos.count(k) > 1]
            if bad or (where == "demos" and not demos):
                raise ValueError(f"{where} must be distinct counts >= 1, got {list(demos)}")
        if len(set(self.leave_out)) != len(self.leave_out):
            raise ValueError(f"leave_out names an embodiment twice: {list(self.leave_out)}")
        if self.leave_out and self.trunk:
            raise ValueError("leave_out pre-trains without each embodiment; it cannot reuse a trunk (drop trunk)")
        if self.leave_out and not [m for m in self.methods if m != "scratch"]:
            raise ValueError("leave_out compares pre-trained trunks: add frozen or finetune to methods")
        for t in self.targets:
            if max(t.demos or self.demos) > t.episodes:
                raise ValueError(f"target {t.embodiment}: {max(t.demos or self.demos)} demonstrations but only {t.episodes} episodes converted")


def demos_of(section: ExperimentSection, target: Target) -> tuple[int, ...]:
    """The K values ``target`` trains with: its own, else the experiment's."""
    return target.demos or section.demos


def cells(section: ExperimentSection) -> list[tuple[str, int]]:
    """(target, K) in the order they run: every target with each of its demonstration counts."""
    return [(t.embodiment, k) for t in section.targets for k in demos_of(section, t)]


def load_experiment(path: str | Path, sets: Sequence[str] = ()) -> ExperimentSection:
    """The experiment file, with ``--set experiment.KEY=VALUE`` overrides applied before validation."""
    return load_section(path, "experiment", ExperimentSection, sets, relative=("pretrain", "trunk"), prepare=_demos_as_lists)


def _demos_as_lists(data: dict[str, Any]) -> dict[str, Any]:
    """``demos = 20`` is a sweep of one: a number where a list of counts is expected becomes a list."""
    section = data.get("experiment")
    if not isinstance(section, dict):
        return data
    tables = [section] + [t for t in section.get("targets", []) if isinstance(t, dict)]
    for table in tables:
        if isinstance(table.get("demos"), int) and not isinstance(table.get("demos"), bool):
            table["demos"] = [table["demos"]]
    return data


def run_dir_of(out: Path, target: str, demos: int, method: str, seed: int) -> Path:
    """Where one run of the experiment trains: ``runs/TARGET/K{demos}/METHOD-seed{seed}``."""
    return Path(out) / "runs" / target / f"K{demos}" / f"{method}-seed{seed}"


def scaled(section: ExperimentSection, pretrain: Recipe | None, scale: float) -> tuple[ExperimentSection, Recipe | None]:
    """``--scale``: more steps and evaluation episodes (for a GPU); 1.0 is the laptop default."""
    if scale == 1.0:
        return section, pretrain
    section = dataclasses.replace(
        section,
        steps=max(1, round(section.steps * scale)) if section.steps else 0,
        eval_episodes=max(1, round(section.eval_episodes * scale)),
    )
    if pretrain is None:
        return section, None
    train = dataclasses.replace(pretrain.train, steps=max(1, round(pretrain.train.steps * scale)))
    return section, dataclasses.replace(pretrain, train=train)


def transfer_recipe(
    section: ExperimentSection, architecture: TrunkSection, device: str, target: Target, demos: int, method: str, seed: int,
    trunk: str, steps: int = 0,
) -> Recipe:
    """One run of the experiment: the training settings of `hpt-kit transfer --embodiment` without a
    recipe (:func:`hpt_kit.train.budget.transfer_train`), the evaluation settings of `hpt-kit eval`.
    ``steps``: the cell's step budget, used when the experiment's ``steps`` is 0."""
    train = dataclasses.replace(transfer_train(section.steps or steps, section.batch_size, section.lr, device), threads=section.threads)
    if method == "scratch":
        transfer = TransferSection(from_scratch=True, freeze_trunk=False)
    elif method == "frozen":
        transfer = TransferSection(trunk, freeze_trunk=True)
    elif method == "lora":
        transfer = TransferSection(trunk, freeze_trunk=True, lora_rank=section.lora_rank, lora_alpha=section.lora_alpha)
    else:
        transfer = TransferSection(trunk, freeze_trunk=False, trunk_lr_scale=section.trunk_lr_scale)
    return Recipe(
        datasets=(DatasetEntry(target.embodiment, episodes=target.episodes, max_episodes=demos),),
        run=RunSection(name=f"{target.embodiment}-K{demos}-{method}-{seed}", seed=seed),
        trunk=architecture,  # scratch: the same architecture as the pre-trained trunk
        train=train,
        transfer=transfer,
        eval=EvalSection(episodes=section.eval_episodes),
        source=f"<experiment {target.embodiment} K={demos} {method} seed {seed}>",
    )


def fixed_threads(setting: int) -> int:
    """The experiment's thread count: ``setting``, else ``$OMP_NUM_THREADS``, else the cores."""
    if setting > 0:
        return setting
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else _cores()


def _architecture(config: TrunkConfig) -> TrunkSection:
    if config.preset in PRESETS and trunk_config(config.preset) == config:
        return TrunkSection(preset=config.preset)
    return TrunkSection("custom", config.embed_dim, config.num_blocks, config.num_heads)


def _curve(run_dir: Path, embodiment: str) -> list[tuple[int, float]]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "val_loss" in r and embodiment in r["val_loss"]:
            out.append((r["step"], r["val_loss"][embodiment]))
    return out


@dataclass
class ExperimentResult:
    out: Path
    table: dict[str, Any] = field(default_factory=dict)


def run_experiment(
    section: ExperimentSection,
    out: Path,
    scale: float = 1.0,
    on_stage: Callable[[str], None] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    workers: int | None = None,
    run_workers: int = 1,
    address: str | None = None,
) -> ExperimentResult:
    """``workers``: evaluation processes per policy (``hpt_kit.policy.parallel.evaluate``; None:
    one per core, 1: serial). ``run_workers``/``address``: the transfer runs fanned out after
    every pre-training (see :meth:`_Runs.transfer`)."""
    from hpt_kit.core.registry import load_registry
    from hpt_kit.train.loop import train

    say = on_stage or (lambda msg: None)
    registry = load_registry()
    out = Path(out)
    section = dataclasses.replace(section, threads=fixed_threads(section.threads))  # one count, recorded
    if section.trunk:  # reuse: no pre-training; the trunk says its architecture and, if a kit run, its mixture
        from hpt_kit.weights.trunks import resolve_trunk

        source = resolve_trunk(section.trunk)
        section, _ = scaled(section, None, scale)
        trunk_dir, architecture, device = section.trunk, _architecture(source.config), "auto"
        mixture = list(_trunk_description(source.path).get("embodiments", {}))
        pretrain_source = section.trunk
    else:
        pretrain = load_recipe(section.pretrain)
        section, pretrain = scaled(section, pretrain, scale)
        if not pretrain.train.threads:
            pretrain = dataclasses.replace(pretrain, train=dataclasses.replace(pretrain.train, threads=section.threads))
        trunk_dir, architecture, device = str(out / "pretrain"), pretrain.trunk, pretrain.train.device
        mixture = [d.embodiment for d in pretrain.datasets]
        pretrain_source = pretrain.source
    out.mkdir(parents=True, exist_ok=True)
    for t in section.targets:  # fail before hours of pre-training, not after
        try:  # a plugin's embodiment, or an imported dataset whose source names a simulator (hpt_kit.data.simulator)
            simulator(registry, t.embodiment)
        except NoEnvironment as exc:
            raise RecipeError(f"experiment target {t.embodiment!r} has no simulator to evaluate it in: {exc}") from None
        if t.embodiment in mixture:
            raise RecipeError(f"experiment target {t.embodiment!r} is in the pre-training mixture; hold it out")

    for name in section.leave_out:
        if name not in mixture:
            raise RecipeError(f"experiment.leave_out: {name!r} is not in the pre-training mixture ({', '.join(mixture)})")
        if len(mixture) < 2:
            raise RecipeError(f"experiment.leave_out: leaving {name!r} out leaves no pre-training data")
    if not section.trunk:
        say(f"pre-train ({pretrain.source})")
        train(pretrain, Path(trunk_dir), registry, resume=True, on_log=on_log)

    versions: dict[str, Any] = {}
    context = _Runs(registry, architecture, device, workers, say, on_log, versions, scale, run_workers, address)
    runs = context.transfer(section, section.methods, trunk_dir, out, "")
    left_out_runs: list[dict[str, Any]] = []
    for name in section.leave_out:
        without = dataclasses.replace(pretrain, datasets=tuple(d for d in pretrain.datasets if d.embodiment != name))
        folder = out / "without" / name
        say(f"pre-train without {name}")
        train(without, folder / "pretrain", registry, resume=True, on_log=on_log)
        methods = tuple(m for m in section.methods if m != "scratch")
        left_out_runs += context.transfer(section, methods, str(folder / "pretrain"), folder, name)
    for run in runs + left_out_runs:  # inside OUT: recorded relative to it, so the folder can move
        run["run_dir"] = portable(run["run_dir"], out)
    table = summarize(runs, section)
    result = {
        "pretrain": {"recipe": pretrain_source, "run_dir": portable(trunk_dir, out), "embodiments": mixture, "reused": bool(section.trunk),
                     **({} if section.trunk else {"threads": pretrain.train.threads})},
        "settings": {**dataclasses.asdict(section), "scale": scale},
        "simulator_versions": {**_pretrain_versions(trunk_dir), **versions},
        "table": table,
        "comparisons": paired_comparisons(runs, cells(section), section.methods),
        "runs": runs,
    }
    if section.leave_out:
        result["leave_one_out"] = leave_one_out(runs, left_out_runs, section)
        result["left_out_runs"] = left_out_runs
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    plot(runs, section, out / "val_loss.png")
    if any(len(demos_of(section, t)) > 1 for t in section.targets):
        plot_sweep(table, out / "success_vs_demos.png")
    return ExperimentResult(out, result)


def reanalysed(result: dict[str, Any], source: str = "results.json") -> dict[str, Any]:
    """A finished experiment's results analysed again with this version's statistics: the table,
    the comparisons with both intervals and the leave-one-out rows, from its runs' recorded
    per-episode successes (nothing is trained or evaluated)."""
    missing = [k for k in ("settings", "runs", "pretrain", "simulator_versions") if k not in result]
    if missing:
        raise ValueError(f"{source}: not an experiment's results (no {missing[0]!r} key)")
    names = {f.name for f in dataclasses.fields(ExperimentSection)}
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in result["settings"].items() if k in names}
    data["targets"] = tuple(Target(t["embodiment"], t.get("episodes", 60), tuple(t.get("demos", ()))) for t in data.get("targets", ()))
    try:
        section = ExperimentSection(**data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: settings: {exc}") from None
    again = {**result, "table": summarize(result["runs"], section),
             "comparisons": paired_comparisons(result["runs"], cells(section), section.methods)}
    if section.leave_out and "left_out_runs" in result:
        again["leave_one_out"] = leave_one_out(result["runs"], result["left_out_runs"], section)
    return again


def _trunk_description(path: Path) -> dict[str, Any]:
    """The checkpoint description of a kit trunk; empty for a published HPT trunk."""
    from hpt_kit.weights.checkpoint import DESCRIPTION, read_checkpoint

    return read_checkpoint(path).description if (Path(path) / DESCRIPTION).is_file() else {}


def _pretrain_versions(trunk_dir: str) -> dict[str, Any]:
    from hpt_kit.weights.trunks import resolve_trunk

    desc = _trunk_description(resolve_trunk(trunk_dir).path)
    return {
        name: {k: v for k, v in e.get("dataset", {}).get("notes", {}).items() if k.endswith("_version")}
        for name, e in desc.get("embodiments", {}).items()
    }


@dataclass
class _Runs:
    """What every transfer run of one experiment shares: the registry, the trunk's architecture and
    device, the evaluation workers, the callbacks, and the simulator versions met so far."""

    registry: Any
    architecture: TrunkSection
    device: str
    workers: int | None
    say: Callable[[str], None]
    on_log: Callable[[dict[str, Any]], None] | None
    versions: dict[str, Any]
    scale: float = 1.0
    run_workers: int = 1  # runs at once, each a work unit (hpt_kit.engine); 1: one after another, here
    address: str | None = None  # a Ray cluster for the runs

    def budget(self, section: ExperimentSection, target: Target, demos: int, seed: int, trunk: str) -> int:
        """``steps = 0``: the steps `hpt-kit transfer --episodes K` would choose for this run (its
        training windows, split with its seed), times ``--scale``; the dataset is converted if missing."""
        from hpt_kit.train.budget import step_budget, training_windows
        from hpt_kit.train.setup import open_datasets

        if section.steps:
            return section.steps
        recipe = transfer_recipe(section, self.architecture, self.device, target, demos, "scratch", seed, trunk, steps=1)
        ds = open_datasets(recipe, self.registry)[target.embodiment]
        windows = training_windows(ds, demos, recipe.train.val_fraction, seed)
        return max(1, round(step_budget(windows, section.batch_size) * self.scale))

    def transfer(self, section: ExperimentSection, methods: Sequence[str], trunk_dir: str, root: Path, left_out: str) -> list[dict[str, Any]]:
        """Train and evaluate every cell, method and seed on ``trunk_dir`` under ``root/runs``;
        ``left_out`` names the embodiment the trunk's mixture lacks ("" for the full mixture).
        With ``run_workers > 1`` or an ``address`` every run is a work unit on the engine
        (:mod:`hpt_kit.engine`) with the experiment's one thread count, so its results are the
        sequential ones; they come back in the same order."""
        targets = {t.embodiment: t for t in section.targets}
        without = f" (pre-trained without {left_out})" if left_out else ""
        jobs = []
        for name, demos in cells(section):
            target = targets[name]
            budgets = {seed: self.budget(section, target, demos, seed, trunk_dir) for seed in section.seeds}  # datasets converted here, once
            for method in methods:
                for seed in section.seeds:
                    recipe = transfer_recipe(section, self.architecture, self.device, target, demos, method, seed, trunk_dir, budgets[seed])
                    label = f"{target.embodiment}, {demos} demonstrations: {method}, seed {seed}{without}"
                    jobs.append(RunJob(label, recipe, target.embodiment, demos, method, seed, left_out,
                                       str(run_dir_of(root, target.embodiment, demos, method, seed)), self.workers))
        if self.run_workers <= 1 and not self.address:
            runs = []
            for job in jobs:
                self.say(job.label)
                runs.append(transfer_run(job, self.registry, self.on_log))
        else:
            from hpt_kit.engine import open_engine

            with open_engine(self.run_workers, self.address) as engine:
                threads = jobs[0].recipe.train.threads if jobs else 0  # the experiment's one count: results as sequential
                crowded = f" on {_cores()} cores (set threads in the experiment file)" if threads * engine.workers > _cores() and not self.address else ""
                self.say(f"{len(jobs)} runs on {engine.name}, {threads} thread(s) each{crowded}")
                done: dict[int, dict[str, Any]] = {}
                for i, run in engine.run(transfer_run, jobs, describe=lambda j: f"run {j.run_dir}"):
                    done[i] = run
                    self.say(f"finished {jobs[i].label} ({len(done)} of {len(jobs)})")
            runs = [done[i] for i in range(len(jobs))]
        for job, run in zip(jobs, runs, strict=True):
            self.versions[run["target"]] = run.pop("versions")
            if run.pop("evaluated") == "cache":
                self.say(f"{job.label}: checkpoint and evaluation settings unchanged; its {run['eval']['episodes']} episodes "
                         f"read from {Path(job.run_dir) / 'evaluations.json'}, not rolled out again")
        return runs


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class RunJob:
    """One (target, K, method, seed) run of the experiment: plain data, so it runs anywhere."""

    label: str
    recipe: Recipe
    target: str
    demos: int
    method: str
    seed: int
    left_out: str
    run_dir: str
    eval_workers: int | None


_WORKER_REGISTRY: list[Any] = []


def worker_registry() -> Any:
    """The plugins of a work unit's process, loaded by its first unit and kept for the next ones."""
    if not _WORKER_REGISTRY:
        from hpt_kit.core.registry import load_registry

        _WORKER_REGISTRY.append(load_registry())
    return _WORKER_REGISTRY[0]


def transfer_run(job: RunJob, registry: Any = None, on_log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) one run and evaluate it as `hpt-kit eval` does; its result row, with the
    simulator versions of its dataset under ``versions``. A work unit: in another process it loads
    the plugins once per process."""
    from hpt_kit.train.loop import train
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    registry = worker_registry() if registry is None else registry
    run_dir = Path(job.run_dir)
    recipe = job.recipe
    train(recipe, run_dir, registry, resume=True, on_log=on_log)
    ckpt = resolve_checkpoint(run_dir)  # as `hpt-kit eval RUN` reads it: a damaged latest is refused
    # The experiment's [eval], which a new run's checkpoints record for `hpt-kit eval`; a finished run
    # resumed with other settings keeps its checkpoint, so they are taken from the recipe, not from it.
    settings = recipe.eval
    rollout, cached = _evaluation(job, ckpt, settings, registry)
    curve = _curve(run_dir, job.target)
    notes = ckpt.description["embodiments"][job.target]["dataset"].get("notes", {})
    return {
        "target": job.target,
        "demos": job.demos,
        "method": job.method,
        "seed": job.seed,
        **({"left_out": job.left_out} if job.left_out else {}),
        "steps": recipe.train.steps,
        "checkpoint_step": ckpt.step,
        "success_rate": rollout["success_rate"],
        "eval": {"episodes": settings.episodes, "seed": settings.seed},
        "success_ci95": pooled_rate([{"successes": rollout["successes"]}])["success_ci95"],
        "successes": rollout["successes"],
        "returns": rollout["returns"],
        "eval_workers": rollout["eval_workers"],  # batched across this many simulators: rounding depends on it
        "threads": recipe.train.threads,
        "trainable_parameters": ckpt.description.get("metrics", {}).get("trainable"),
        "final_val_loss": curve[-1][1] if curve else None,
        "val_curve": curve,
        "run_dir": str(run_dir),
        "versions": {k: v for k, v in notes.items() if k.endswith("_version")},
        "evaluated": "cache" if cached else "rollouts",  # said by the driver, not recorded
    }


def _evaluation(job: RunJob, ckpt: Any, settings: EvalSection, registry: Any) -> tuple[dict[str, Any], bool]:
    """The run's rollouts as `hpt-kit eval` makes them, or the same evaluation read from the run's
    cache (:mod:`hpt_kit.lab.eval_cache`) when the checkpoint and the settings are unchanged; and
    whether it came from the cache."""
    from hpt_kit.episode_workers import default_workers
    from hpt_kit.lab import eval_cache
    from hpt_kit.models.hpt import HPT
    from hpt_kit.policy import Policy
    from hpt_kit.policy.parallel import evaluate

    model = HPT.from_checkpoint(ckpt, registry)
    ensemble = settings.temporal_ensemble or None
    policy = Policy(model, job.target, settings.execute_steps, ensemble=ensemble)
    workers = min(default_workers() if job.eval_workers is None else job.eval_workers, settings.episodes)
    key_settings = {"embodiment": job.target, "episodes": settings.episodes, "seed": settings.seed,
                    "execute_steps": policy.execute_steps, "temporal_ensemble": ensemble, "render": policy.needs_images,
                    "workers": workers}
    identity = eval_cache.checkpoint_identity(ckpt.path, ckpt.step)
    key = eval_cache.entry_key(identity, key_settings)
    found = eval_cache.cached(Path(job.run_dir), key)
    if found is not None:
        return found, True
    request = RolloutRequest(episodes=settings.episodes, seed=settings.seed, render=policy.needs_images)
    rollout, eval_workers = evaluate(simulator(registry, job.target), policy, request, job.eval_workers)
    result = {"success_rate": rollout.success_rate, "successes": list(rollout.successes), "returns": list(rollout.returns),
              "eval_workers": eval_workers}
    eval_cache.remember(Path(job.run_dir), key, identity, key_settings, result)
    return result, False


def leave_one_out(runs: Sequence[dict[str, Any]], left_out_runs: Sequence[dict[str, Any]], section: ExperimentSection) -> list[dict[str, Any]]:
    """Per left-out embodiment, cell and method: the transfer pre-trained without it against the same
    method, seeds and episodes on the full mixture. ``difference`` is full minus without: positive
    when the embodiment's data helped the target, negative when it hurt (Newcombe's paired interval,
    and beside it the seed-level cluster bootstrap; ``verdict`` rests on the stricter)."""
    from hpt_kit.core.stats import cluster_bootstrap, paired_difference

    rows = []
    for name in section.leave_out:
        for target, demos in cells(section):
            for method in [m for m in section.methods if m != "scratch"]:
                full = _by_seed(runs, (target, demos, method, None))
                without = _by_seed(left_out_runs, (target, demos, method, name))
                seeds = sorted(set(full) & set(without))
                a = [s for seed in seeds for s in full[seed]["successes"]]
                b = [s for seed in seeds for s in without[seed]["successes"]]
                d = paired_difference(a, b)
                clusters = [[float(x) - float(y) for x, y in zip(full[seed]["successes"], without[seed]["successes"])] for seed in seeds]
                boot = cluster_bootstrap(clusters) if clusters and all(clusters) else None
                seed_ci = [boot.low, boot.high] if boot else [-1.0, 1.0]
                loss = [without[seed]["final_val_loss"] - full[seed]["final_val_loss"] for seed in seeds
                        if without[seed]["final_val_loss"] is not None and full[seed]["final_val_loss"] is not None]
                rows.append({
                    "left_out": name, "target": target, "demos": demos, "method": method, "seeds": seeds,
                    "without_rate": d.b_rate, "full_rate": d.a_rate, "difference": d.difference, "ci95": [d.low, d.high],
                    "resolved": d.resolved, "pairs": d.n,
                    "seed_ci95": seed_ci, "verdict": stricter(d.difference, [d.low, d.high], seed_ci),
                    "val_loss_change": float(np.mean(loss)) if loss else None,  # without minus full: > 0, it helped
                })
    return rows


def _by_seed(pool: Sequence[dict[str, Any]], key: tuple[str, int, str, str | None]) -> dict[int, dict[str, Any]]:
    """The runs of one (target, demos, method, left-out embodiment or None), by seed."""
    return {r["seed"]: r for r in pool if (r["target"], r["demos"], r["method"], r.get("left_out")) == key}


def leave_one_out_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The report's section: for each left-out embodiment, whether its data helped each target."""
    if not rows:
        return []
    lines = [
        "## Which pre-training data helped",
        "",
        "Each row pre-trains without one embodiment and transfers again with the same method, seeds and "
        "evaluation episodes. Full minus without: a positive difference means the embodiment's data "
        "helped the target. Two 95% intervals: Newcombe's for paired episodes, and the seed bootstrap "
        "(training seeds resampled, then episodes within them); the verdict rests on the stricter, named "
        "beside it. The validation-loss change is without minus full (positive: the loss rose without it).",
        "",
        "| left out | target | demos | method | success without | with all | full − without (paired episodes) | (seed bootstrap) "
        "| validation loss change | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        low, high = r["ci95"]
        chosen = r.get("verdict") or {"interval": "paired episodes", "resolved": r["resolved"]}
        s_low, s_high = r.get("seed_ci95") or (float("nan"), float("nan"))
        if not chosen["resolved"]:
            word = "not resolved"
        else:
            word = "helped" if r["difference"] > 0 else "hurt"
        loss = f"{r['val_loss_change']:+.4f}" if r["val_loss_change"] is not None else "n/a"
        lines.append(
            f"| {r['left_out']} | {r['target']} | {r['demos']} | {r['method']} | {r['without_rate']:.1%} | {r['full_rate']:.1%} "
            f"| {100 * r['difference']:+.1f} ({100 * low:+.1f} to {100 * high:+.1f}) | {100 * s_low:+.1f} to {100 * s_high:+.1f} "
            f"| {loss} | {word} ({chosen['interval']}) |"
        )
    return lines + [""]


def summarize(runs: list[dict[str, Any]], section: ExperimentSection) -> list[dict[str, Any]]:
    rows = []
    for target, demos in cells(section):
        for method in section.methods:
            mine = [r for r in runs if (r["target"], r["demos"], r["method"]) == (target, demos, method)]
            success = np.array([r["success_rate"] for r in mine], dtype=float)
            losses = np.array([r["final_val_loss"] for r in mine if r["final_val_loss"] is not None], dtype=float)
            rows.append(
                {
                    "target": target,
                    "method": method,
                    "demos": demos,
                    "seeds": len(mine),
                    "success_mean": float(success.mean()),
                    "success_std": float(success.std()),
                    **pooled_rate(mine),
                    "val_loss_mean": float(losses.mean()) if len(losses) else None,
                    "val_loss_std": float(losses.std()) if len(losses) else None,
                    "trainable_parameters": max((r.get("trainable_parameters") or 0 for r in mine), default=0) or None,
                }
            )
    return rows


def _steps_text(result: dict[str, Any]) -> str:
    """"300 steps", or for ``steps = 0`` the budgets the runs got, per cell."""
    s = result["settings"]
    if s["steps"]:
        return f"{s['steps']} steps"
    per_cell: dict[tuple[str, int], set[int]] = {}
    for r in result["runs"]:
        per_cell.setdefault((r["target"], r["demos"]), set()).add(r.get("steps", 0))
    budgets = "; ".join(
        f"{t} K={k}: {'-'.join(str(v) for v in sorted({min(v), max(v)}))}" for (t, k), v in per_cell.items()
    )
    return f"the step budget of each run ({budgets} steps)"


def _threads_text(result: dict[str, Any]) -> str:
    """", 2 torch threads per training": what the numbers depend on besides the settings."""
    counts = sorted({r["threads"] for r in result.get("runs", []) if r.get("threads")})
    if not counts:
        return ""
    return f", {'-'.join(map(str, counts))} torch thread{'s' if counts != [1] else ''} per run"


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    scale = s.get("trunk_lr_scale", 1.0)
    lr = (f", lr {s['lr']:g}" if "lr" in s else "") + (f" (fine-tuned trunk x{scale:g})" if scale != 1 else "")
    lines = [
        "# HPT transfer experiment",
        "",
        f"Pre-trained on: {', '.join(result['pretrain']['embodiments'])}. "
        f"Transfer: {_steps_text(result)}, batch {s['batch_size']}{lr}, seeds {list(s['seeds'])}, "
        f"{s['eval_episodes']} evaluation episodes per run{_threads_text(result)}. Mean ± std over seeds; the interval is "
        "Wilson's 95% on all the method's episodes pooled over seeds.",
        "",
        "| target | method | demos | success rate | pooled, 95% interval | trainable parameters | final validation loss |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["table"]:
        loss = f"{r['val_loss_mean']:.4f} ± {r['val_loss_std']:.4f}" if r["val_loss_mean"] is not None else "n/a"
        pooled = f"{format_rate(r['success_pooled'], r['success_ci95'])} of {r['episodes']}" if "success_ci95" in r else "n/a"
        trainable = f"{r['trainable_parameters']:,}" if r.get("trainable_parameters") else "n/a"
        lines.append(
            f"| {r['target']} | {r['method']} | {r['demos']} | {r['success_mean']:.1%} ± {r['success_std']:.1%} | {pooled} "
            f"| {trainable} | {loss} |"
        )
    lines += ["", *comparison_markdown(result.get("comparisons", []))]
    lines += leave_one_out_markdown(result.get("leave_one_out", []))
    lines += ["Simulator versions: " + json.dumps(result["simulator_versions"]), ""]
    return "\n".join(lines)


def mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The mean and standard deviation of a cell's validation curves, the i-th validation of every
    seed together, at the mean of their steps. Seeds whose step budgets differ by a few steps
    validate a few steps apart (every 28 or 29 steps), and one may validate once more than another:
    the curves are cut to the shortest."""
    n = min(len(c) for c in curves)
    steps = [round(sum(c[i][0] for c in curves) / len(curves)) for i in range(n)]
    values = np.array([[c[i][1] for i in range(n)] for c in curves], dtype=float)
    return steps, values.mean(0), values.std(0)


def plot(runs: list[dict[str, Any]], section: ExperimentSection, path: Path) -> None:
    """Validation loss against step, one panel per target, mean over seeds per method."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the plot needs matplotlib: pip install 'hpt-kit[experiment]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = cells(section)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (target, demos) in zip(axes[0], panels):
        for method in section.methods:
            curves = [
                r["val_curve"] for r in runs
                if (r["target"], r["demos"], r["method"]) == (target, demos, method) and r["val_curve"]
            ]
            if not curves:
                continue
            steps, mean, std = mean_curve(curves)
            ax.plot(steps, mean, label=method)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{target}, K={demos}")
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(table: list[dict[str, Any]], path: Path) -> None:
    """Success rate against the number of demonstrations, one panel per target, one line per
    method: episodes pooled over seeds, error bars the Wilson 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(r["target"] for r in table))
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.6), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for method in dict.fromkeys(r["method"] for r in table):
            rows = sorted((r for r in table if r["target"] == target and r["method"] == method), key=lambda r: r["demos"])
            k = [r["demos"] for r in rows]
            rate = np.array([r["success_pooled"] for r in rows])
            low = rate - np.array([r["success_ci95"][0] for r in rows])
            high = np.array([r["success_ci95"][1] for r in rows]) - rate
            ax.errorbar(k, rate, yerr=[low, high], marker="o", capsize=3, label=method)
        ax.set_title(target)
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["demos"] for r in table if r["target"] == target}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("demonstrations (K)")
        ax.set_ylabel("success rate (95% interval)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["ExperimentSection", "Target", "load_experiment", "reanalysed", "run_experiment"]
