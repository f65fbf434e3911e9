"""Start-up of a streamed pre-training over many datasets: seconds from ``hpt-kit pretrain``'s process
start to its first training step, and the peak memory of its process tree (the training process and
its reading processes), for a mixture of N generated datasets.

    python -m hpt_kit.lab.stream_startup --datasets 10 50 [--readers N] [--sharded-every 3] [--repeat 3] [--json]

The datasets are tiny data-only (imported) embodiments written into a temporary data root, every
``sharded_every``-th one as a sharded dataset (:mod:`hpt_kit.data.shards`), so the figures are the
cost of the datasets' count, not their size. ``--readers`` sets ``[train] stream_readers`` (0: the
automatic count; the number of datasets: a reading process per dataset, as before reading processes
were pooled). Memory is sampled every 50 ms from ``/proc``: the tree's
summed PSS (shared pages, like the stream buffers both processes map, divided among their mappers)
and summed RSS (shared pages counted in each process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpt_kit.core.spec import ActionSpec, EmbodimentData, HeadSpec, ObservationSpec, StemSpec
from hpt_kit.data.shards import shard_name, write_manifest
from hpt_kit.data.store import write_dataset

STATE_DIM, ACTION_DIM, EPISODES, STEPS = 4, 2, 6, 20
POLL_S = 0.05


def _spec(name: str) -> EmbodimentData:
    return EmbodimentData(
        name=name,
        observation=ObservationSpec(state_dim=STATE_DIM),
        action=ActionSpec(ACTION_DIM, (-1.0,) * ACTION_DIM, (1.0,) * ACTION_DIM, 10.0),
        stems=(StemSpec("state"),),
        head=HeadSpec(),
        description="a generated dataset for the streaming start-up measurement",
    )


def _episodes(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"state": rng.standard_normal((STEPS, STATE_DIM)).astype(np.float32),
         "action": np.tanh(rng.standard_normal((STEPS, ACTION_DIM))).astype(np.float32)}
        for _ in range(count)
    ]  # fmt: skip


def write_datasets(root: Path, count: int, sharded_every: int = 3) -> list[str]:
    """``count`` tiny imported datasets ``gen-000`` ... under ``root``; every ``sharded_every``-th
    (0: none) as three shards and a manifest. Returns their embodiment names."""
    names = []
    for i in range(count):
        name = f"gen-{i:03d}"
        notes = {"import": {"format": "generated", "source": "hpt_kit.lab.stream_startup"}}
        episodes = _episodes(i, EPISODES)
        path = root / f"{name}.zarr"
        if sharded_every and i % sharded_every == sharded_every - 1:
            path.mkdir(parents=True)
            parts = np.array_split(np.arange(EPISODES), 3)
            for k, part in enumerate(parts):
                write_dataset(path / shard_name(k), _spec(name), [episodes[j] for j in part], notes)
            write_manifest(path, [shard_name(k) for k in range(len(parts))], {"operation": "stream_startup"})
        else:
            write_dataset(path, _spec(name), episodes, notes)
        names.append(name)
    return names


def write_recipe(path: Path, names: list[str], steps: int = 2, readers: int = 0) -> Path:
    lines = ['[run]\nname = "stream-startup"\n[trunk]\npreset = "custom"\nembed_dim = 16\nnum_blocks = 1\nnum_heads = 2\n']
    lines += [f'[[datasets]]\nembodiment = "{n}"\nconvert = false\n' for n in names]
    lines.append(
        f"[train]\nsteps = {steps}\nbatch_size = 8\nlog_every = 1\nval_every = {steps}\ncheckpoint_every = {steps}\n"
        f"warmup_steps = 0\nstream = true\nstream_memory_mb = 1\nstream_blocks = 2\nstream_readers = {readers}\n"
    )
    path.write_text("".join(lines))
    return path


def _tree(root: int) -> list[int]:
    """``root`` and every live process descended from it (from each thread's ``children`` list)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def _memory(pids: list[int]) -> tuple[int, int]:
    """Summed PSS and RSS in bytes (a process that has just gone counts 0)."""
    pss = rss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return pss, rss


def _first_step(metrics: Path) -> bool:
    try:
        text = metrics.read_text()
    except OSError:
        return False
    return '"loss":' in text  # a training step's record (a validation record has "val_loss")


def measure(count: int, sharded_every: int = 3, readers: int = 0, work: Path | None = None) -> dict[str, Any]:
    """One ``hpt-kit pretrain`` of ``count`` generated datasets, streamed: seconds to the first
    training step, the most reading processes seen at once, peak summed PSS and RSS."""
    with tempfile.TemporaryDirectory(prefix="hpt-kit-stream-startup-", dir=work) as tmp:
        tmp_path = Path(tmp)
        names = write_datasets(tmp_path / "data", count, sharded_every)
        recipe = write_recipe(tmp_path / "recipe.toml", names, readers=readers)
        run = tmp_path / "run"
        env = {**os.environ, "HPT_KIT_DATA": str(tmp_path / "data")}
        exe = Path(sys.executable).with_name("hpt-kit")
        started = time.perf_counter()
        proc = subprocess.Popen([str(exe), "pretrain", str(recipe), "--out", str(run)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first = None
        peak_pss = peak_rss = children = 0
        while proc.poll() is None:
            pids = _tree(proc.pid)
            pss, rss = _memory(pids)
            peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
            children = max(children, len(pids) - 1)
            if first is None and _first_step(run / "metrics.jsonl"):
                first = time.perf_counter() - started
            time.sleep(POLL_S)
        total = time.perf_counter() - started
        err = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(f"hpt-kit pretrain of {count} datasets failed ({proc.returncode}): {err.strip()[-2000:]}")
        if first is None:  # the run ended between two polls
            first = total
        return {
            "datasets": count,
            "sharded": sum(1 for i in range(count) if sharded_every and i % sharded_every == sharded_every - 1),
            "stream_readers": readers,
            "first_step_s": round(first, 2),
            "total_s": round(total, 2),
            "child_processes_max": children,
            "peak_pss_mb": round(peak_pss / 2**20, 1),
            "peak_rss_mb": round(peak_rss / 2**20, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--sharded-every", type=int, default=3, help="every N-th dataset sharded (0: none)")
    parser.add_argument("--readers", type=int, default=0, help="[train] stream_readers (0: automatic)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(n, args.sharded_every, args.readers) for n in args.datasets for _ in range(args.repeat)]
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        print(f"{r['datasets']} datasets ({r['sharded']} sharded), stream_readers {r['stream_readers']}: first step after {r['first_step_s']} s "
              f"(run {r['total_s']} s), {r['child_processes_max']} child processes at most, "
              f"peak PSS {r['peak_pss_mb']} MB, peak RSS {r['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
