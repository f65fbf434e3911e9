"""The same `hpt-kit experiment transfer` command twice gives the same numbers, episode by episode,
even when another kit training process starts in between (which changes the automatic thread
count of a lone `hpt-kit transfer`); and `lora` runs beside the other methods with its trainable
parameters in the table."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import HPT_KIT, ROOT

pytestmark = pytest.mark.slow

PER_RUN = ("target", "demos", "method", "seed", "steps", "threads", "eval_workers", "successes", "returns",
           "final_val_loss", "val_curve", "trainable_parameters")


def _experiment(spec, out):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the experiment's own count: the cores
    run = subprocess.run([HPT_KIT, "experiment", "transfer", str(spec), "--out", str(out)], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_the_same_command_twice_gives_the_same_episodes_and_losses(tmp_path):
    (tmp_path / "pre.toml").write_text((ROOT / "recipes" / "smoke.toml").read_text().replace("steps = 40", "steps = 10"))
    spec = tmp_path / "experiment.toml"
    spec.write_text(
        """
[experiment]
pretrain = "pre.toml"
methods = ["scratch", "frozen", "lora"]
lora_rank = 2
seeds = [0]
demos = 4
steps = 6
batch_size = 16
eval_episodes = 3

[[experiment.targets]]
embodiment = "mujoco-arm4"
episodes = 6
"""
    )
    first = _experiment(spec, tmp_path / "one")
    # A process that the kit counts as a training run: an automatic thread count would halve now.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "hpt-kit", "transfer"])
    try:
        second = _experiment(spec, tmp_path / "two")
    finally:
        other.kill()
        other.wait()

    threads = first["settings"]["threads"]
    assert threads >= 1 and second["settings"]["threads"] == threads == first["pretrain"]["threads"]
    assert [{k: r[k] for k in PER_RUN} for r in second["runs"]] == [{k: r[k] for k in PER_RUN} for r in first["runs"]]
    assert all(r["threads"] == threads and len(r["returns"]) == 3 and r["val_curve"] for r in first["runs"])
    assert second["table"] == first["table"] and second["comparisons"] == first["comparisons"]
    for out in ("one", "two"):  # every training ran at that count, start to end
        for metrics in (tmp_path / out).glob("**/metrics.jsonl"):
            start = json.loads(metrics.read_text().splitlines()[0])
            assert start["threads"] == threads, metrics

    # LoRA: adapters of the file's rank on the frozen trunk, fewer trainable parameters than scratch.
    run_dir = tmp_path / "one" / "runs" / "mujoco-arm4" / "K4" / "lora-seed0"
    ckpt = json.loads((run_dir / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert ckpt["lora"]["rank"] == 2 and ckpt["frozen_trunk"] is True and ckpt["mode"] == "transfer"
    trainable = {r["method"]: r["trainable_parameters"] for r in first["table"]}
    assert trainable["frozen"] < trainable["lora"] < trainable["scratch"]
    compared = {c["method"]: c for c in first["comparisons"]}
    assert set(compared) == {"frozen", "lora"} and all("seed_ci95" in c and c["verdict"]["interval"] for c in compared.values())
    report = (tmp_path / "one" / "results.md").read_text()
    assert "| mujoco-arm4 | lora | 4 |" in report and f"| {trainable['lora']:,} |" in report
    assert "trainable parameters" in report and f"{threads} torch thread" in report
