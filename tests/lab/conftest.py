"""The tiny transfer experiment that the command's tests run, written once for all of them."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ROOT


def write_experiment(path: Path, steps: int = 4, pretrain: Path = ROOT / "recipes" / "smoke.toml", extra: str = "") -> Path:
    """An experiment file at ``path``: pre-training from ``pretrain``, the mujoco-arm4 target with 6
    episodes converted, K = 4, seed 0, ``steps`` per run, 2 evaluation episodes; ``extra``: more
    ``[experiment]`` keys."""
    path.write_text(
        f"""
[experiment]
pretrain = "{pretrain}"
seeds = [0]
demos = 4
steps = {steps}
batch_size = 16
eval_episodes = 2
{extra}
[[experiment.targets]]
embodiment = "mujoco-arm4"
episodes = 6
"""
    )
    return path
