"""The scaling study at laptop scale: how a pre-trained network's held-out loss moves with the number
of pre-training datasets, the data per dataset and the trunk's size.

Each axis is varied alone around the base point, the pre-training recipe as written (all its
datasets, their episodes, its trunk); each point is pre-trained with every seed. The measure is the
validation loss on a held-out set of the probe embodiment (the recipe's first dataset, which every
point trains on): episodes converted with their own seed (``heldout_seed``), never trained on by any
point, so all points are scored on the same episodes. Points with the same settings are trained once.
Writes ``results.json``, ``results.md`` and one PNG per axis (mean over seeds, error bars one
standard deviation).
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

    def __post_init__(self) -> None:
        if not (self.datasets or self.episodes or self.trunks):
            raise ValueError("give at least one axis: datasets, episodes or trunks")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if any(n < 1 for n in (*self.datasets, *self.episodes)):
            raise ValueError("datasets and episodes values must be >= 1")


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
    section: ScalingSection, out: Path, on_stage: Callable[[str], None] | None = None, scale: float = 1.0
) -> dict[str, Any]:
    """Every point of every axis pre-trained with every seed and scored on the probe's held-out
    episodes. ``scale`` multiplies the pre-training steps (e.g. 10 on a GPU)."""
    from hpt_kit.core.registry import load_registry
    from hpt_kit.data.convert import convert
    from hpt_kit.train.loop import train

    say = on_stage or (lambda msg: None)
    registry = load_registry()
    base = load_recipe(section.pretrain)
    steps = max(1, round((section.steps or base.train.steps) * scale))
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, steps=steps))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    probe = base.datasets[0].embodiment
    todo = points(section, base)  # every point checked before anything trains
    heldout = out / "heldout" / f"{probe}.zarr"
    if not heldout.exists():
        say(f"held-out episodes of {probe} (seed {section.heldout_seed})")
        convert(registry.embodiment(probe), heldout, section.heldout_episodes, section.heldout_seed, registry=registry)
    losses: dict[tuple[str, int], float] = {}
    runs = []
    for axis, value, recipe in todo:
        for seed in section.seeds:
            key = _key(recipe)
            if (key, seed) not in losses:
                say(f"{axis} = {value}: pre-train {key}, seed {seed}")
                run_dir = out / "runs" / f"{key}-seed{seed}"
                seeded = dataclasses.replace(recipe, run=dataclasses.replace(recipe.run, name=f"{key}-seed{seed}", seed=seed))
                train(seeded, run_dir, registry, resume=True)
                losses[(key, seed)] = heldout_loss(run_dir, probe, heldout, registry)
            runs.append({"axis": axis, "value": value, "seed": seed, "point": key, "heldout_loss": losses[(key, seed)],
                         "run_dir": str(out / "runs" / f"{key}-seed{seed}")})
    result = {
        "pretrain": base.source,
        "probe": probe,
        "heldout": {"path": str(heldout), "episodes": section.heldout_episodes, "seed": section.heldout_seed},
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


def heldout_loss(run_dir: Path, probe: str, heldout: Path, registry: Any) -> float:
    """The run's latest network's validation loss on every window of the held-out episodes."""
    from hpt_kit.data.sampler import SequenceSampler
    from hpt_kit.data.store import Dataset
    from hpt_kit.models.hpt import HPT
    from hpt_kit.train.offline import offline_metrics
    from hpt_kit.weights.checkpoint import latest_checkpoint, resolve_checkpoint

    model = HPT.from_checkpoint(resolve_checkpoint(latest_checkpoint(run_dir)), registry)
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
