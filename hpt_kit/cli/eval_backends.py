"""``hpt-kit eval RUN --backend A --backend B``: later backends against the first, on the same
episodes and on the run's held-out data (``hpt_kit.lab.backend_accuracy``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def compare_backends(
    reference: Mapping[str, Any],
    backends: Sequence[str],
    roll_out: Callable[[str], dict[str, Any]],
    model: Any,
    name: str,
    description: Mapping[str, Any],
) -> dict[str, Any]:
    """``reference``: the first backend's rollout results; ``roll_out(backend)`` gives another's on
    the same episodes. Each later backend's results with its success rate minus the reference's
    (Newcombe's paired interval), and the held-out actions of all of them (or why there are none)."""
    from hpt_kit.core.stats import paired_difference
    from hpt_kit.lab.backend_accuracy import held_out_agreement

    out: dict[str, Any] = {"reference": backends[0], "rollouts": {}}
    for backend in backends[1:]:
        result = roll_out(backend)
        diff = paired_difference(result["successes"], reference["successes"])
        result["minus_reference"] = {"difference": diff.difference, "ci95": [diff.low, diff.high],
                                     "this_only": diff.a_only, "reference_only": diff.b_only}
        out["rollouts"][backend] = result
    try:
        out["held_out"] = held_out_agreement(model, name, description, backends)
    except (ValueError, FileNotFoundError) as exc:  # no split recorded, or the dataset is not here
        out["held_out"] = {"unavailable": str(exc)}
    return out


def print_comparison(out: Mapping[str, Any], console: Any) -> None:
    """One line per later backend: its success rate against the reference's, then the held-out actions."""
    ref = out["reference"]
    for backend, r in out["rollouts"].items():
        d = r["minus_reference"]
        console.print(f"{backend}: success {r['success_rate']:.1%} ({backend} minus {ref}: {d['difference']:+.1%}, "
                      f"95% {d['ci95'][0]:+.1%} to {d['ci95'][1]:+.1%}; episodes only {backend} solved {d['this_only']}, "
                      f"only {ref} {d['reference_only']})", highlight=False, soft_wrap=True)
    held = out["held_out"]
    if "unavailable" in held:
        console.print(f"held-out actions: not measured ({held['unavailable']})", highlight=False, soft_wrap=True)
        return
    console.print(f"held-out actions ({held['windows']} windows of {len(held['episodes'])} episodes, {held['dataset']}):",
                  highlight=False, soft_wrap=True)
    for backend, mae in held["first_action_mae"].items():
        vs = "" if backend == ref else (f"; differs from {ref} by {held['max_difference'][backend]:.3%} of the action range "
                                        f"at most, {held['mean_difference'][backend]:.3%} on average")
        console.print(f"  {backend}: first action's mean absolute error {mae:.4g} (robot units){vs}", highlight=False, soft_wrap=True)
