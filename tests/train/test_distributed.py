"""Data-parallel pre-training under torchrun on CPU (gloo): two processes match one, and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hpt_kit.core.registry import load_registry
from hpt_kit.models.hpt import HPT
from hpt_kit.weights.checkpoint import resolve_checkpoint
from tests.conftest import HPT_KIT, ROOT

pytestmark = pytest.mark.slow

RECIPE = """
[run]
name = "ddp"
[trunk]
preset = "tiny"
[[datasets]]
embodiment = "mujoco-arm3"
episodes = 24
[train]
steps = 60
batch_size = 32
lr = 1e-3
warmup_steps = 5
val_every = 20
checkpoint_every = 20
log_every = 10
"""


def torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hpt_kit", *map(str, args)]
    return cmd, env


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, parallel):
    recipe = tmp_path / "ddp.toml"
    recipe.write_text(RECIPE + f'parallel = "{parallel}"\n')
    subprocess.run([HPT_KIT, "pretrain", recipe, "--out", tmp_path / "one"], check=True, capture_output=True, cwd=ROOT)
    cmd, env = torchrun("pretrain", recipe, "--out", tmp_path / "two")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    one, two = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert sum("event" in r for r in two) == 1  # rank 0 alone writes metrics
    assert two[0]["world_size"] == 2
    v1 = [r["val_loss"]["mujoco-arm3"] for r in one if "val_loss" in r]
    v2 = [r["val_loss"]["mujoco-arm3"] for r in two if "val_loss" in r]
    assert len(v1) == len(v2) == 3
    assert v2[-1] < 0.5 * v2[0] and v1[-1] < 0.5 * v1[0]  # both learn
    for a, b in zip(v1, v2):
        assert abs(a - b) <= 0.35 * a, (v1, v2)  # same curve within sampling noise
    saved = resolve_checkpoint(tmp_path / "two")
    assert saved.description["world_size"] == 2
    # Whole tensors, not shards, whatever the parallelism: the checkpoint loads into a plain model.
    model = HPT.from_checkpoint(saved, load_registry(embodiments=False))
    assert {k: v.shape for k, v in saved.tensors().items()} == {k: v.shape for k, v in model.state_dict().items()}


STREAM = "stream = true\nstream_memory_mb = 0.05\nstream_blocks = 2\n"


@pytest.mark.parametrize("parallel", ["ddp", "fsdp", "ddp-stream"])
def test_torchrun_resumes_after_being_stopped(tmp_path, parallel):
    recipe = tmp_path / "ddp.toml"
    stream = parallel.endswith("-stream")
    recipe.write_text(RECIPE + f'parallel = "{parallel.removesuffix("-stream")}"\n' + (STREAM if stream else ""))
    run = tmp_path / "run"
    cmd, env = torchrun("pretrain", recipe, "--out", run)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (run / "checkpoints" / "step_00000020").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    stopped_at = resolve_checkpoint(run).step
    assert 20 <= stopped_at < 60, stopped_at
    out = subprocess.run(torchrun("pretrain", recipe, "--out", run, "--resume")[0], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert resolve_checkpoint(run).step == 60
    records = _records(run)
    steps = [r["step"] for r in records if "loss" in r]
    assert steps[-1] == 60 and any(s > stopped_at for s in steps)
    assert sum("event" in r for r in records) == 1  # the resumed run did not start over
    if stream:  # every rank's stretches were saved and restored
        from hpt_kit.weights.checkpoint import load_training_state

        streams = json.loads(load_training_state(resolve_checkpoint(run).path)["streams"])
        assert len(streams) == 2 and all(set(s) == {"mujoco-arm3"} for s in streams)
        assert streams[0]["mujoco-arm3"]["slots"] != streams[1]["mujoco-arm3"]["slots"]
