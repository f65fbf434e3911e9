"""The scaling study at laptop scale: how a pre-trained network's held-out loss moves with the number
of pre-training datasets, the data per dataset and the trunk's size.

Each axis is varied alone around the base point, the pre-training recipe as written (all its
datasets, their episodes, its trunk); each point is pre-trained with every seed. The measure is the
validation loss on a held-out set of the probe embodiment (the recipe's first dataset, which every
point trains on): episodes converted with their own seed (``heldout_seed``), never trained on by any
point, so all points are scored on the same episodes. Points with the same settings are trained once.
Writes ``results.json`` (paths inside OUT relative to it), ``results.md`` and one PNG per axis
(mean over seeds, error bars one standard deviation). Every pre-training runs at one thread count
(``threads``), so with ``--run-workers``/``--address`` each (point, seed) can be a work unit in a
process of its own and the results are still the sequential ones.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.core.overrides import load_section
from hpt_kit.core.recipe import Recipe, RecipeError, TrunkSection, load_recipe
from hpt_kit.lab.paths import portable

AXES = ("datasets", "episodes", "trunk")


@dataclass(frozen=True)
class ScalingSection:
    pretrain: str = "recipes/default.toml"  # the base point (relative paths: to this file)
    datasets: tuple[int, ...] = ()  # pre-training sets of the first N datasets of the recipe
    episodes: tuple[int, ...] = ()  # the first N episodes of every dataset (at most the recipe's)
    trunks: tuple[str, ...] = ()  # trunk presets
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 0  # pre-training steps per point; 0 = the recipe's
    heldout_episodes: int = 10  # the probe's held-out episodes
    heldout_seed: int = 9_999  # their conversion seed: no training dataset is converted with it
    # torch threads of every pre-training whose recipe leaves them automatic, fixed so that the
    # numbers do not depend on what else the machine runs nor on --run-workers; 0: $OMP_NUM_THREADS
    # if set, else the cores this process may use, counted at the start.
    threads: int = 0

    def __post_init__(self) -> None:
        if not (self.datasets or self.episodes or self.trunks):
            raise ValueError("give at least one axis: datasets, episodes or trunks")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if any(n < 1 for n in (*self.datasets, *self.episodes)):
            raise ValueError("datasets and episodes values must be >= 1")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = $OMP_NUM_THREADS, else the cores), got {self.threads}")


def load_scaling(path: str | Path, sets: Sequence[str] = ()) -> ScalingSection:
    """The study's file (a ``[scaling]`` section), with ``--set scaling.KEY=VALUE`` applied first."""
    return load_section(path, "scaling", ScalingSection, sets, relative=("pretrain",))


def points(section: ScalingSection, base: Recipe) -> list[tuple[str, Any, Recipe]]:
    """(axis, value, recipe) for every point of every axis; the recipe is the base with one change."""
    out = []
    limit = min(d.max_episodes or d.episodes for d in base.datasets)
    for n in section.datasets:
        if n > len(base.datasets):
            raise RecipeError(f"scaling.datasets: {n} datasets asked for, the recipe has {len(base.datasets)}")
        out.append(("datasets", n, dataclasses.replace(base, datasets=base.datasets[:n])))
    for n in section.episodes:
        if n > limit:
            raise RecipeError(f"scaling.episodes: {n} episodes asked for, the recipe's datasets have {limit}")
        entries = tuple(dataclasses.replace(d, max_episodes=n) for d in base.datasets)
        out.append(("episodes", n, dataclasses.replace(base, datasets=entries)))
    for preset in section.trunks:
        out.append(("trunk", preset, dataclasses.replace(base, trunk=TrunkSection(preset=preset))))
    return out


def _key(recipe: Recipe) -> str:
    """A name for a point's settings: equal settings, one training run."""
    limits = {d.max_episodes for d in recipe.datasets}
    episodes = f"e{limits.pop()}" if len(limits) == 1 and 0 not in limits else "eall"
    return f"d{len(recipe.datasets)}-{episodes}-{recipe.trunk.preset}"


def run_scaling(
    section: ScalingSection, out: Path, on_stage: Callable[[str], None] | None = None, scale: float = 1.0,
    run_workers: int = 1, address: str | None = None,
) -> dict[str, Any]:
    """Every point of every axis pre-trained with every seed and scored on the probe's held-out
    episodes. ``scale`` multiplies the pre-training steps (e.g. 10 on a GPU). ``run_workers`` /
    ``address``: after the datasets are converted, every (point, seed) is a work unit on the engine
    (:mod:`hpt_kit.engine`) at the study's one thread count, so the results are the sequential ones."""
    from hpt_kit.core.registry import load_registry
    from hpt_kit.data.convert import convert
    from hpt_kit.lab.experiment import fixed_threads
    from hpt_kit.train.setup import open_datasets

    say = on_stage or (lambda msg: None)
    registry = load_registry()
    section = dataclasses.replace(section, threads=fixed_threads(section.threads))  # one count, recorded
    base = load_recipe(section.pretrain)
    steps = max(1, round((section.steps or base.train.steps) * scale))
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, steps=steps, threads=base.train.threads or section.threads))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    probe = base.datasets[0].embodiment
    todo = points(section, base)  # every point checked before anything trains
    heldout = out / "heldout" / f"{probe}.zarr"
    if not heldout.exists():
        say(f"held-out episodes of {probe} (seed {section.heldout_seed})")
        convert(registry.embodiment(probe), heldout, section.heldout_episodes, section.heldout_seed, registry=registry)
    open_datasets(base, registry)  # every training dataset converted here, once, before any point trains
    jobs: dict[tuple[str, int], PointJob] = {}  # equal settings, one training run
    for axis, value, recipe in todo:
        for seed in section.seeds:
            key = _key(recipe)
            if (key, seed) not in jobs:
                seeded = dataclasses.replace(recipe, run=dataclasses.replace(recipe.run, name=f"{key}-seed{seed}", seed=seed))
                jobs[(key, seed)] = PointJob(f"{axis} = {value}: pre-train {key}, seed {seed}", seeded,
                                             str(out / "runs" / f"{key}-seed{seed}"), probe, str(heldout))
    scored = dict(zip(jobs, _run_points(list(jobs.values()), registry, say, run_workers, address), strict=True))
    runs = []
    for axis, value, recipe in todo:
        for seed in section.seeds:
            key = _key(recipe)
            runs.append({"axis": axis, "value": value, "seed": seed, "point": key, **scored[(key, seed)],
                         "run_dir": portable(jobs[(key, seed)].run_dir, out)})
    result = {
        "pretrain": base.source,
        "probe": probe,
        "heldout": {"path": portable(heldout, out), "episodes": section.heldout_episodes, "seed": section.heldout_seed},
        "settings": {**dataclasses.asdict(section), "scale": scale, "steps_per_point": steps},
        "table": summarize(runs),
        "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    for axis in AXES:
        rows = [r for r in result["table"] if r["axis"] == axis]
        if rows:
            plot(rows, axis, probe, out / f"scaling_{axis}.png")
    return result


@dataclass(frozen=True)
class PointJob:
    """One (point, seed) of the study: plain data, so it runs anywhere."""

    label: str
    recipe: Recipe
    run_dir: str
    probe: str
    heldout: str


def _run_points(jobs: list[PointJob], registry: Any, say: Callable[[str], None], run_workers: int, address: str | None) -> list[dict[str, Any]]:
    """Every job's score, in the jobs' order: one after another here, or as units on the engine."""
    if run_workers <= 1 and not address:
        scores = []
        for job in jobs:
            say(job.label)
            scores.append(point_run(job, registry))
        return scores
    from hpt_kit.engine import open_engine
    from hpt_kit.train.threads import cores

    with open_engine(run_workers, address) as engine:
        threads = jobs[0].recipe.train.threads if jobs else 0
        crowded = f" on {cores()} cores (set threads in the study file)" if threads * engine.workers > cores() and not address else ""
        say(f"{len(jobs)} pre-trainings on {engine.name}, {threads} thread(s) each{crowded}")
        done: dict[int, dict[str, Any]] = {}
        for i, score in engine.run(point_run, jobs, describe=lambda j: f"run {j.run_dir}"):
            done[i] = score
            say(f"finished {jobs[i].label} ({len(done)} of {len(jobs)})")
    return [done[i] for i in range(len(jobs))]


def point_run(job: PointJob, registry: Any = None) -> dict[str, Any]:
    """Pre-train (or resume) one point with one seed and score it on the held-out episodes: a work unit."""
    from hpt_kit.lab.experiment import worker_registry
    from hpt_kit.train.loop import train
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    registry = worker_registry() if registry is None else registry
    train(job.recipe, Path(job.run_dir), registry, resume=True)
    ckpt = resolve_checkpoint(job.run_dir)  # as the CLI reads a run: a damaged latest is refused
    return {"heldout_loss": heldout_loss(ckpt, job.probe, Path(job.heldout), registry), "checkpoint_step": ckpt.step}


def heldout_loss(ckpt: Any, probe: str, heldout: Path, registry: Any) -> float:
    """The checkpoint's network's validation loss on every window of the held-out episodes."""
    from hpt_kit.data.sampler import SequenceSampler
    from hpt_kit.data.store import Dataset
    from hpt_kit.models.hpt import HPT
    from hpt_kit.train.offline import offline_metrics

    model = HPT.from_checkpoint(ckpt, registry)
    spec = model.specs[probe]
    ds = Dataset(heldout)
    windows = SequenceSampler(ds, np.arange(ds.num_episodes), spec.observation_horizon, spec.action_horizon,
                              [s.modality for s in spec.stems])
    return float(offline_metrics(model, probe, windows)["val_loss"])


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for axis in AXES:
        values = list(dict.fromkeys(r["value"] for r in runs if r["axis"] == axis))
        for value in values:
            losses = np.array([r["heldout_loss"] for r in runs if r["axis"] == axis and r["value"] == value])
            rows.append({"axis": axis, "value": value, "seeds": len(losses), "heldout_loss_mean": float(losses.mean()),
                         "heldout_loss_std": float(losses.std())})
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# HPT scaling study",
        "",
        f"Base point: {result['pretrain']}. Measure: validation loss on {result['heldout']['episodes']} held-out "
        f"episodes of {result['probe']} (conversion seed {result['heldout']['seed']}, never trained on). "
        "Mean ± std over seeds; one axis varied at a time.",
        "",
        "| axis | value | seeds | held-out loss |",
        "| --- | --- | --- | --- |",
    ]
    for r in result["table"]:
        lines.append(f"| {r['axis']} | {r['value']} | {r['seeds']} | {r['heldout_loss_mean']:.4f} ± {r['heldout_loss_std']:.4f} |")
    return "\n".join(lines + [""])


def plot(rows: Sequence[dict[str, Any]], axis: str, probe: str, path: Path) -> None:
    """Held-out loss against one axis, error bars one standard deviation over seeds."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the plots need matplotlib: pip install 'hpt-kit[experiment]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"datasets": "pre-training datasets", "episodes": "episodes per dataset", "trunk": "trunk preset"}
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    x = np.arange(len(rows)) if axis == "trunk" else np.array([r["value"] for r in rows], dtype=float)
    ax.errorbar(x, [r["heldout_loss_mean"] for r in rows], yerr=[r["heldout_loss_std"] for r in rows],
                marker="o", capsize=4)
    if axis == "trunk":
        ax.set_xticks(x, [str(r["value"]) for r in rows])
    ax.set_xlabel(labels[axis])
    ax.set_ylabel(f"held-out loss ({probe})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
