"""``hpt-kit report RUN``: a run's curves as PNG plots and a one-page Markdown summary.

Everything comes from what the run wrote: ``metrics.jsonl`` (the curves), ``recipe.toml`` (the
settings) and the description of the latest checkpoint, or the one ``--checkpoint`` chooses, when there
is one (datasets, trunk source, the step; report.md names that checkpoint's folder). Plots, one file each: ``loss.png`` (training loss per embodiment, validation loss per
embodiment), ``lr.png`` and ``throughput.png`` (samples/s); the summary ``report.md`` links them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.train import record as train_record
from hpt_kit.weights.checkpoint import Checkpoint, NoCheckpointError, resolve_checkpoint

TAIL = 5  # logged steps averaged for the "final" training loss and throughput


@dataclass(frozen=True)
class RunReport:
    markdown: Path
    plots: tuple[Path, ...]


@dataclass(frozen=True)
class Curves:
    """The metrics of a run as series of (step, value)."""

    train: dict[str, list[tuple[int, float]]]  # per embodiment ("mixed" for mixed batches)
    val: dict[str, list[tuple[int, float]]]
    lr: list[tuple[int, float]]
    throughput: list[tuple[int, float]]
    start: dict[str, Any]  # the "start" event (mode, parameter counts, device)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``, read as a resume reads them (a torn last line left out)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is this a run directory?)")
    return train_record.read_metrics(path)


def curves(records: Sequence[Mapping[str, Any]]) -> Curves:
    train: dict[str, list[tuple[int, float]]] = {}
    val: dict[str, list[tuple[int, float]]] = {}
    lr, throughput, start = [], [], {}
    for r in records:
        if r.get("event") == "start":
            start = dict(r)
        if "loss" in r:
            train.setdefault(r["embodiment"], []).append((r["step"], r["loss"]))
            lr.append((r["step"], r["lr"]))
            throughput.append((r["step"], r["samples_per_s"]))
        for name, value in r.get("val_loss", {}).items():
            val.setdefault(name, []).append((r["step"], value))
    return Curves(train, val, lr, throughput, start)


def _plot(path: Path, title: str, ylabel: str, series: Mapping[str, list[tuple[int, float]]], log: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, points in series.items():
        if points:
            steps, values = zip(*points, strict=True)
            style = {"marker": "o", "markersize": 3} if label.startswith("validation") else {"alpha": 0.85}
            ax.plot(steps, values, label=label, **style)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log and all(v > 0 for points in series.values() for _, v in points):
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean_tail(points: list[tuple[int, float]]) -> float | None:
    return float(np.mean([v for _, v in points[-TAIL:]])) if points else None


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _trunk_origin(description: Mapping[str, Any]) -> str:
    if "trunk_source" not in description:
        return ", trained from scratch"
    frozen = "frozen" if description.get("frozen_trunk") else "fine-tuned"
    return f", {frozen}, from `{description['trunk_source']}` (sha256 {str(description.get('trunk_source_sha256', ''))[:12]})"


def summary(run_dir: Path, c: Curves, recipe: Mapping[str, Any], ckpt: Checkpoint | None, chosen: str | None = None) -> str:
    """The one-page Markdown summary (the plots are linked, not embedded). ``ckpt``: the checkpoint
    described, the latest or the one ``chosen`` (``--checkpoint``) names."""
    description = ckpt.description if ckpt is not None else None
    run, train = recipe.get("run", {}), recipe.get("train", {})
    trunk = recipe.get("trunk", {})
    mode = c.start.get("mode", "pretrain" if not recipe.get("transfer", {}).get("trunk") else "transfer")
    last = max((s for points in c.train.values() for s, _ in points), default=0)
    lines = [
        f"# Run `{run.get('name', run_dir.name)}` ({mode})",
        "",
        f"- run directory: `{run_dir}`",
        f"- steps: {last} of {train.get('steps', '?')}"
        + ("; no checkpoint yet" if ckpt is None else f"; latest checkpoint at step {ckpt.step}" if chosen is None
           else f"; checkpoint at step {ckpt.step} (chosen with --checkpoint {chosen})"),
        f"- trunk: preset `{trunk.get('preset', '?')}`" + _trunk_origin(description or {}),
        f"- parameters: {c.start.get('parameters', 0):,} ({c.start.get('trainable', 0):,} trained, trunk {c.start.get('trunk', 0):,})",
        f"- batch {train.get('batch_size', '?')}, lr {train.get('lr', '?')} (warm-up {train.get('warmup_steps', '?')}, "
        f"cosine to x{train.get('min_lr_ratio', '?')}), mix `{train.get('mix', 'step')}`, device `{c.start.get('device', '?')}`, "
        f"{c.start.get('world_size', 1)} process(es)",
        f"- throughput: {_fmt(_mean_tail(c.throughput), ',.0f')} samples/s (mean of the last {TAIL} logged steps)",
        "",
        "## Embodiments",
        "",
        "| embodiment | weight | episodes | steps | final training loss | best validation loss | final validation loss |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    datasets = (description or {}).get("embodiments", {})
    for entry in recipe.get("datasets", []):
        name = entry["embodiment"]
        ds = datasets.get(name, {}).get("dataset", {})
        val = c.val.get(name, [])
        best = min(val, key=lambda p: p[1]) if val else None
        lines.append(
            f"| {name} | {entry.get('weight', 1.0):g} | {ds.get('num_episodes', '?')} | {ds.get('num_steps', '?')} "
            f"| {_fmt(_mean_tail(c.train.get(name, [])))} "
            f"| {_fmt(best[1]) + f' (step {best[0]})' if best else 'n/a'} | {_fmt(val[-1][1] if val else None)} |"
        )
    if "mixed" in c.train:
        lines += ["", f"Mixed batches: final training loss over all embodiments {_fmt(_mean_tail(c.train['mixed']))}."]
    lines += [
        "",
        "## Curves",
        "",
        "![loss](loss.png)",
        "",
        "![learning rate](lr.png) ![throughput](throughput.png)",
        "",
        f"Final training loss: mean of the last {TAIL} logged steps. Sources: `metrics.jsonl`, `recipe.toml`"
        + (f", `{_within(ckpt.path, run_dir)}/checkpoint.json` (step {ckpt.step})." if ckpt is not None else "."),
        "",
    ]
    return "\n".join(lines)


def _within(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run directory when inside it (``checkpoints/step_00000040``), else whole."""
    try:
        return path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def write_report(run_dir: Path, out: Path | None = None, checkpoint: str | None = None) -> RunReport:
    """Plots and ``report.md`` for the run in ``run_dir``, written to ``out`` (default: the run's ``report/``).
    The checkpoint described is the latest (refused when damaged) or the one ``checkpoint`` chooses;
    a run without a checkpoint yet is reported from its metrics alone."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    c = curves(read_metrics(run_dir / "metrics.jsonl"))
    recipe_path = run_dir / "recipe.toml"
    recipe = tomllib.loads(recipe_path.read_text()) if recipe_path.is_file() else {}
    ckpt: Checkpoint | None = None
    if (run_dir / "checkpoints").is_dir() or checkpoint is not None:
        try:
            ckpt = resolve_checkpoint(run_dir, checkpoint)
        except NoCheckpointError:
            pass
    out.mkdir(parents=True, exist_ok=True)
    losses = {f"training {n}": p for n, p in c.train.items()} | {f"validation {n}": p for n, p in c.val.items()}
    plots = (
        _plot(out / "loss.png", "loss per embodiment", "loss", losses, log=True),
        _plot(out / "lr.png", "learning rate", "lr", {"lr": c.lr}),
        _plot(out / "throughput.png", "throughput", "samples/s", {"samples/s": c.throughput}),
    )
    markdown = out / "report.md"
    markdown.write_text(summary(run_dir, c, recipe, ckpt, checkpoint))
    return RunReport(markdown, plots)
