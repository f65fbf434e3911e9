"""Offline evaluation: how well a trained network predicts the actions of episodes it never trained on,
next to the trivial policies it has to beat.

For an embodiment with no simulator behind it (an imported dataset) there is no success rate to
measure. Its run's held-out episodes (the same split training used: the recipe's seed, validation
fraction or named episodes, and episode limit) stand in: every step of them is one window, the
network predicts the action chunk, and the report is the error per action dimension in the robot's
own units, plus the validation loss training reports.

A low error means little on its own: a robot that barely moves between steps is predicted well by
doing nothing. So the same windows are scored for two baselines:

- **hold position**: every action of the chunk is the current state (command the joints to stay).
  It only means something where the action commands the same quantities as the state measures, in
  the same units. The kit decides from the spec: the widths must match, and where both carry names
  from the source (LeRobot's ``names``) the names must be equal; where they carry none (or only
  names made from the keys, ``state[i]``) equal widths are taken as the same joints, and the report
  says it assumed so.
- **repeat previous**: every action of the chunk is the action recorded one step before, which a
  robot always knows. Each episode's first step has none, so the windows start at every episode's
  second step, for the policy and both baselines alike.

The overall figure of each is the mean absolute error of the first action (the one a robot executes
first) over dimensions; per held-out episode it gives one value, and over episodes a t interval.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpt_kit.core.recipe import parse_recipe
from hpt_kit.core.spec import ACTION, STATE, EmbodimentData, action_labels
from hpt_kit.core.stats import mean_interval
from hpt_kit.data.sampler import SequenceSampler, make_samplers, take_rows
from hpt_kit.data.store import Dataset
from hpt_kit.train.step import to_torch

POLICY = "policy"
HOLD = "hold_position"
REPEAT = "repeat_previous"
BASELINE_TITLES = {HOLD: "hold position", REPEAT: "repeat previous"}
_DERIVED = re.compile(r".*\[\d+\]$")  # names the kit made from a key ("state[3]"), not the source's


def held_out(description: Mapping[str, Any], name: str, spec: Any, dataset: Path | None = None):
    """The validation sampler of ``name``'s run: its dataset (or ``dataset``), split as in training."""
    recipe = parse_recipe(dict(description.get("recipe", {})), "checkpoint recipe")
    entries = [d for d in recipe.datasets if d.embodiment == name]
    stored = description["embodiments"][name].get("dataset", {}).get("path")
    path = Path(dataset) if dataset is not None else Path(stored) if stored else None
    if path is None:
        raise ValueError(f"the checkpoint does not say which dataset {name!r} trained on; pass --data")
    ds = Dataset(path)
    _, val = make_samplers(
        ds,
        spec.observation_horizon,
        spec.action_horizon,
        [s.modality for s in spec.stems],
        recipe.train.val_fraction,
        recipe.run.seed,
        (entries[0].max_episodes or None) if entries else None,
        held_out=entries[0].val_episodes if entries else (),
        min_val=recipe.train.val_min_episodes,
    )
    if val is None:
        raise ValueError(f"{path}: the run held out no episodes (train.val_fraction = 0): nothing to evaluate on")
    return ds, val


def held_out_episodes(ds: Dataset, val: SequenceSampler) -> list[int]:
    """The indices (in ``ds``) of the episodes a validation sampler covers."""
    return [int(e) for e in np.searchsorted(ds.episode_starts, np.unique(val.start))]


def hold_position_applies(spec: EmbodimentData) -> tuple[bool, str]:
    """Whether commanding the current state is a meaningful action, and why (see the module text)."""
    obs, act = spec.observation, spec.action
    if obs.state_dim != act.dim:
        return False, f"state has {obs.state_dim} values and action {act.dim}: they measure different quantities"
    named = [n for n in (obs.state_names, act.names) if n and not all(_DERIVED.match(x) for x in n)]
    if len(named) == 2:
        if tuple(obs.state_names) == tuple(act.names):
            return True, "state and action carry the same names"
        diff = next(i for i, (a, b) in enumerate(zip(obs.state_names, act.names)) if a != b)
        return False, f"state and action name different quantities ({obs.state_names[diff]!r} and {act.names[diff]!r} at {diff})"
    return True, f"state and action both have {act.dim} values and no names to compare: assumed the same joints in the same units"


@torch.no_grad()
def offline_metrics(model: torch.nn.Module, name: str, val: SequenceSampler, batch_size: int = 256) -> dict[str, Any]:
    """Validation loss (every window), and for the policy and each applicable baseline on the same
    windows (from each episode's second step): the mean absolute error of the predicted chunk (all
    its steps, and its first step alone) per action dimension in the robot's units, the overall
    first-step error per held-out episode, and its mean with a t interval over episodes."""
    model.eval()
    spec = model.specs[name]
    hold, hold_why = hold_position_applies(spec)
    names = [POLICY, REPEAT] + ([HOLD] if hold else [])
    A, K = spec.action.dim, val.action_horizon
    chunk_sum = {p: np.zeros(A) for p in names}
    first_sum = {p: np.zeros(A) for p in names}
    episodes = np.searchsorted(val.dataset.episode_starts, np.unique(val.start))
    per_episode = {p: np.zeros(len(episodes)) for p in names}
    per_count = np.zeros(len(episodes))
    loss_sum, n_all, n = 0.0, 0, 0
    for i in range(0, len(val), batch_size):
        rows = np.arange(i, min(i + batch_size, len(val)))
        raw = val.batch(rows)
        batch = to_torch(raw, torch.device("cpu"))
        loss_sum += model.loss(name, batch).item() * len(rows)
        n_all += len(rows)
        t, start = val.index[rows], val.start[rows]
        keep = t > start  # an episode's first step has no previous action
        if not keep.any():
            continue
        target = raw[ACTION][keep].astype(np.float64)  # (B, K, A)
        guesses = {
            POLICY: model.predict(name, batch).cpu().numpy()[keep],
            REPEAT: np.asarray(take_rows(val.arrays[ACTION], t[keep] - 1))[:, None, :],  # (B, 1, A)
        }
        if hold:
            guesses[HOLD] = raw[STATE][keep, -1][:, None, :]  # the current state, (B, 1, A)
        slot = np.searchsorted(episodes, np.searchsorted(val.dataset.episode_starts, start[keep]))
        for p, guess in guesses.items():
            err = np.abs(np.broadcast_to(guess, target.shape) - target)  # (B, K, A)
            chunk_sum[p] += err.sum(axis=(0, 1))
            first_sum[p] += err[:, 0].sum(axis=0)
            np.add.at(per_episode[p], slot, err[:, 0].mean(axis=1))
        np.add.at(per_count, slot, 1)
        n += int(keep.sum())
    if n == 0:
        raise ValueError(f"{val.dataset.path}: the held-out episodes have no step after their first: nothing to score")
    scored = per_count > 0
    out: dict[str, Any] = {
        "windows": n,
        "val_loss": loss_sum / n_all,
        "dimensions": list(action_labels(spec.action)),
        "episodes_scored": [int(e) for e in episodes[scored]],
    }
    results = {}
    for p in names:
        ep_means = (per_episode[p][scored] / per_count[scored]).tolist()
        interval = mean_interval(ep_means)
        results[p] = {
            "action_mae": (chunk_sum[p] / (n * K)).tolist(),
            "first_action_mae": (first_sum[p] / n).tolist(),
            "mean_action_mae": float(np.mean(chunk_sum[p] / (n * K))),
            "mean_first_action_mae": float(np.mean(first_sum[p] / n)),
            "per_episode_first_action_mae": ep_means,
            "ci95": None if interval is None else [interval[1], interval[2]],
        }
    out.update(results.pop(POLICY))
    pol = np.asarray(out["per_episode_first_action_mae"])
    out["baselines"] = {}
    for p in (HOLD, REPEAT):
        entry: dict[str, Any] = {"applicable": p in results}
        if p == HOLD:
            entry["reason"] = hold_why
        if p in results:
            entry.update(results[p])
            diff = mean_interval((pol - np.asarray(results[p]["per_episode_first_action_mae"])).tolist())
            entry["policy_minus_baseline"] = None if diff is None else list(diff)  # [mean, low, high], paired by episode
        out["baselines"][p] = entry
    return out


@torch.no_grad()
def replay(model: torch.nn.Module, name: str, ds: Dataset, episode: int, out: Path, held: Sequence[int] = ()) -> dict[str, Any]:
    """Every step of one episode through the network (observations as recorded), its predicted first
    action against the recorded one, per dimension, drawn to ``out`` (PNG); with the current state
    beside them where holding position applies. Returns the episode's first-step error per dimension."""
    if not 0 <= episode < ds.num_episodes:
        raise ValueError(f"{ds.path}: no episode {episode}; it has episodes 0 to {ds.num_episodes - 1}")
    model.eval()
    spec = model.specs[name]
    sampler = SequenceSampler(ds, [episode], spec.observation_horizon, spec.action_horizon, [s.modality for s in spec.stems])
    predicted, recorded, state = [], [], []
    for raw in sampler.batches(256):
        predicted.append(model.predict(name, to_torch(raw, torch.device("cpu"))).cpu().numpy()[:, 0])
        recorded.append(raw[ACTION][:, 0])
        state.append(raw[STATE][:, -1])
    pred, rec, st = np.concatenate(predicted), np.concatenate(recorded), np.concatenate(state)
    hold, _ = hold_position_applies(spec)
    labels = action_labels(spec.action)
    _plot_replay(out, pred, rec, st if hold else None, labels,
                 f"{name}: episode {episode} ({'held out' if episode in held else 'trained on'}), predicted first action vs recorded")
    return {"episode": episode, "held_out": episode in held, "steps": len(rec), "plot": str(out),
            "dimensions": list(labels), "first_action_mae": np.abs(pred - rec).mean(axis=0).tolist()}


def _plot_replay(out: Path, pred: np.ndarray, rec: np.ndarray, state: np.ndarray | None, labels: Sequence[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = pred.shape[1]
    cols = 2 if dims > 3 else 1
    rows = -(-dims // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 1.8 * rows + 0.6), squeeze=False, sharex=True)
    for d, ax in enumerate(axes.flat):
        if d >= dims:
            ax.set_axis_off()
            continue
        ax.plot(rec[:, d], color="black", linewidth=1.2, label="recorded")
        ax.plot(pred[:, d], color="tab:blue", linewidth=1.0, label="predicted")
        if state is not None:
            ax.plot(state[:, d], color="tab:gray", linewidth=0.8, linestyle="--", label="current state")
        ax.set_title(labels[d], fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=6, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
