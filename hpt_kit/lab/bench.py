"""``hpt-kit bench``: how fast this machine trains, acts and samples, measured in one run.

Everything is measured, nothing assumed: the matmul peak is timed in the same run and MFU is the
achieved model FLOP rate (counted by ``torch.utils.flop_counter``) over that peak. The sampler runs in
a child process so its peak RSS is its own.

The standard shape (the reference HPT setting): state 39-d, one camera view of 49x512 precomputed
image features, observation horizon 1, an action chunk of 4 steps of 4-d actions, MLP head.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpt_kit.core.presets import trunk_config
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import (
    ActionSpec,
    EmbodimentData,
    HeadSpec,
    ImageFeatureSpec,
    ObservationSpec,
    StemSpec,
)
from hpt_kit.engine import peak_rss_mb
from hpt_kit.models.hpt import HPT
from hpt_kit.train.step import compile_mode, make_optimizer, optimizer_step, pick_device, reuse_freed_memory

STATE_DIM, VIEWS, TOKENS, CHANNELS, CHUNK, ACTION_DIM = 39, 1, 49, 512, 4, 4
PARTS = ("train", "act", "mixed", "sampler", "serve", "eval")  # what a run measures; the matmul peak always
ASKED_PARTS = ("import",)  # measured only when named (minutes, and no model): hpt_kit.lab.bench_import


def standard_spec(name: str = "bench") -> EmbodimentData:
    return EmbodimentData(
        name=name,
        observation=ObservationSpec(STATE_DIM, image_features=ImageFeatureSpec(("corner",), TOKENS, CHANNELS)),
        action=ActionSpec(ACTION_DIM, (-1.0,) * ACTION_DIM, (1.0,) * ACTION_DIM, 10.0),
        stems=(StemSpec("state"), StemSpec("image_features")),
        head=HeadSpec(action_horizon=CHUNK),
        observation_horizon=1,
    )


def standard_stats() -> dict:
    return {
        "state": {"mean": [0.0] * STATE_DIM, "std": [1.0] * STATE_DIM},
        "action": {"min": [-1.0] * ACTION_DIM, "max": [1.0] * ACTION_DIM},
    }


def standard_model(preset: str, names: Sequence[str] = ("bench",)) -> HPT:
    specs = {n: standard_spec(n) for n in names}
    return HPT(trunk_config(preset), specs, {n: standard_stats() for n in names}, load_registry(load_entrypoints=False))


def standard_batch(batch: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "state": torch.randn(batch, 1, STATE_DIM, generator=g).to(device),
        "image_features": torch.randn(batch, 1, VIEWS, TOKENS, CHANNELS, generator=g).to(device),
        "action": (torch.rand(batch, CHUNK, ACTION_DIM, generator=g) * 2 - 1).to(device),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """The machine's matmul peak, GFLOP/s: the best rate of large square matmuls over several sizes
    and repeats (the best, not the median, because the peak is what MFU is measured against)."""
    sizes = (4096, 8192) if device.type == "cuda" else (2048, 3072)
    reps = 10 if device.type == "cuda" else 1
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for i in range(8):
            _sync(device)
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            if i:  # the first is warm-up
                best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def train_step_fn(
    model: HPT, batch: dict[str, torch.Tensor], frozen: bool, device: torch.device, compile: bool = False, precision: str = "auto"
) -> Callable[[], None]:
    """The training loop's own step (optimiser, autocast, compile mode, clipping) on a fixed batch."""
    if device.type == "cpu":
        reuse_freed_memory()  # as training does
    model.trunk.requires_grad_(not frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, lr=1e-4, weight_decay=0.0, device=device)
    name = next(iter(model.specs))
    net = torch.compile(model, mode=compile_mode(device)) if compile else model

    def step() -> None:
        optimizer_step(net, {name: batch}, opt, params, lr=1e-4, grad_clip=1.0, device=device, compiled=compile, precision=precision)

    return step


def flops_per_sample(step: Callable[[], None], batch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch


def bench_train(
    preset: str, batch: int, frozen: bool, device: torch.device, steps: int, compile: bool = False, precision: str = "auto"
) -> dict[str, Any]:
    """Step time of one setting; FLOPs and MFU are added by :func:`count_train_flops`."""
    torch.manual_seed(0)
    if compile:
        torch._dynamo.reset()  # a fresh graph cache per setting: no recompile limit, no stale graphs
    model = standard_model(preset).to(device).train()
    data = standard_batch(batch, device)
    step = train_step_fn(model, data, frozen, device, compile, precision)
    seconds = _median_time(step, device, repeats=steps, warmup=2 if compile else 1)
    return {
        "preset": preset,
        "batch": batch,
        "trunk": "frozen" if frozen else "trained",
        "samples_per_s": batch / seconds,
        "step_ms": seconds * 1e3,
        "compiled": compile,
        "precision": precision,
    }


@functools.cache
def _train_flops(preset: str, frozen: bool, device: torch.device) -> tuple[float, float]:
    """A step's FLOPs as ``fixed + per_sample * batch``, from counts at batches 2 and 4: exact at any
    batch (ops are per sample, except a few per batch such as the stems' latent projections), and
    cheap where counting at batch 256 would take as long as the timing itself."""
    totals = []
    for batch in (2, 4):
        torch.manual_seed(0)
        model = standard_model(preset).to(device).train()
        totals.append(flops_per_sample(train_step_fn(model, standard_batch(batch, device), frozen, device), batch) * batch)
    per_sample = (totals[1] - totals[0]) / 2
    return totals[0] - 2 * per_sample, per_sample


def count_train_flops(record: dict[str, Any], device: torch.device, peak: float) -> None:
    """Adds ``flops_per_sample`` and ``mfu`` to a timed record, counting on fresh eager models.
    Counted after all timing: the counter's module hooks slow compiled code run after it."""
    fixed, per_sample = _train_flops(record["preset"], record["trunk"] == "frozen", device)
    flops = per_sample + fixed / record["batch"]
    record["flops_per_sample"] = flops
    record["mfu"] = record["samples_per_s"] * flops / (peak * 1e9)


def bench_act(preset: str, device: torch.device, calls: int, compile: bool = False, backend: str = "torch") -> dict[str, Any]:
    """``Policy.act()`` latency at batch 1, a prediction every call, on the ``torch`` (eager or
    compiled), ``onnx``, ``onnx-int8`` or ``openvino`` backend."""
    from hpt_kit.policy import Policy

    torch.manual_seed(0)
    if compile:
        torch._dynamo.reset()
    compile = compile and backend == "torch"  # the graph backends have their runtime's own optimisations
    model = standard_model(preset)
    policy = Policy(model, "bench", execute_steps=1, device=device, compile=compile, backend=backend)  # predict every call
    rng = np.random.default_rng(0)
    obs = {
        "state": rng.normal(size=STATE_DIM).astype(np.float32),
        "image_features": rng.normal(size=(VIEWS, TOKENS, CHANNELS)).astype(np.float32),
    }
    for _ in range(10):
        policy.act(obs)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        policy.act(obs)
        times.append((time.perf_counter() - t) * 1e3)
    return {
        "preset": preset,
        "backend": backend,
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "calls": calls,
        "compiled": compile,
    }


def add_speedups(records: list[dict[str, Any]]) -> None:
    """``speedup``: the torch backend's p50 over each record's, per preset (1.0 for torch itself),
    where this run measured torch for that preset."""
    torch_p50 = {r["preset"]: r["p50_ms"] for r in records if r["backend"] == "torch"}
    for r in records:
        if r["preset"] in torch_p50:
            r["speedup"] = torch_p50[r["preset"]] / r["p50_ms"]


def act_flops(model: HPT, device: torch.device) -> float:
    """Model FLOPs of one batch-1 prediction: with the matmul peak, the floor under act() latency."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.predict(next(iter(model.specs)), {k: v[:1] for k, v in standard_batch(1, device).items()})
    return float(counter.get_total_flops())


MATMULS = ("linear", "matmul", "mm", "addmm", "bmm")  # aten ops whose products a replay repeats


def matmul_calls(fn: Callable[[], Any], device: torch.device) -> list[tuple[Any, list[torch.Tensor]]]:
    """The matrix products ``fn`` runs (forward and, for a training step, backward), each with fresh
    random operands of its shapes, ready for :func:`replay_ms`."""
    from torch.utils._python_dispatch import TorchDispatchMode

    ops = {getattr(torch.ops.aten, name).default for name in MATMULS}
    calls: list[tuple[Any, list[tuple[torch.Size, torch.dtype]]]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in ops:
                calls.append((func, [(a.shape, a.dtype) for a in args if isinstance(a, torch.Tensor)]))
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    return [(func, [torch.randn(shape, device=device, dtype=dtype) for shape, dtype in operands]) for func, operands in calls]


def replay_ms(calls: list[tuple[Any, list[torch.Tensor]]], device: torch.device, repeats: int, warmup: int) -> float:
    """The products back to back, median ms: a floor under the call they came from on this device's
    matmul library, whatever the overhead around them (products inside fused attention are not
    among them, so the floor is a little low)."""

    def replay() -> None:
        with torch.no_grad():
            for func, args in calls:
                func(*args)

    return _median_time(replay, device, repeats, warmup) * 1e3


def act_matmul_ms(model: HPT, device: torch.device, repeats: int = 50) -> tuple[float, int]:
    """The linear layers' matrix products of one batch-1 prediction alone, replayed back to back at
    their own shapes: (median ms, number of products). Well above the FLOPs at the peak says the
    shapes (tens of rows) keep the library far from its peak."""
    observation = {k: v[:1] for k, v in standard_batch(1, device).items()}

    def predict() -> None:
        with torch.inference_mode():
            model.predict(next(iter(model.specs)), observation)

    calls = matmul_calls(predict, device)
    return replay_ms(calls, device, repeats, warmup=5), len(calls)


def train_floors(record: dict[str, Any], device: torch.device, peak: float, repeats: int = 3) -> None:
    """Adds the two floors under a timed training record: ``flops_floor_ms``, the step's counted
    FLOPs at the measured matmul peak, and ``matmul_ms``, the step's matrix products (forward and
    backward) replayed at their shapes on a fresh eager model. Run after :func:`count_train_flops`."""
    record["flops_floor_ms"] = record["flops_per_sample"] * record["batch"] / (peak * 1e6)
    torch.manual_seed(0)
    model = standard_model(record["preset"]).to(device).train()
    step = train_step_fn(model, standard_batch(record["batch"], device), record["trunk"] == "frozen", device, precision=record.get("precision", "auto"))
    step()  # the optimiser's state exists before the recorded step, as in the timed ones
    calls = matmul_calls(step, device)
    record["matmul_ms"] = replay_ms(calls, device, repeats, warmup=1)
    record["matmul_calls"] = len(calls)


def bench_mixed(preset: str, device: torch.device, batch: int, steps: int) -> dict[str, Any]:
    """One step on a batch drawn from two embodiments at once versus one step per embodiment."""
    torch.manual_seed(0)
    model = standard_model(preset, ("bench-a", "bench-b")).to(device).train()
    half = {n: standard_batch(batch // 2, device, seed=i) for i, n in enumerate(("bench-a", "bench-b"))}
    params = list(model.parameters())
    opt = make_optimizer(params, lr=1e-4, weight_decay=0.0, device=device)

    def mixed() -> None:
        optimizer_step(model, half, opt, params, lr=1e-4, grad_clip=0.0, device=device)

    def separate() -> None:
        for name, b in half.items():
            optimizer_step(model, {name: b}, opt, params, lr=1e-4, grad_clip=0.0, device=device)

    t_mixed = _median_time(mixed, device, repeats=steps, warmup=1)
    t_sep = _median_time(separate, device, repeats=steps, warmup=1)
    return {
        "preset": preset,
        "batch": batch,
        "embodiments": 2,
        "mixed_step_ms": t_mixed * 1e3,
        "separate_steps_ms": t_sep * 1e3,
        "speedup": t_sep / t_mixed,
    }


def make_store(path: Path, gigabytes: float, seed: int = 0) -> Path:
    """A standard-shape dataset of at least ``gigabytes`` on disk (random, incompressible features)."""
    from hpt_kit.data.store import write_dataset

    step_bytes = 4 * (STATE_DIM + ACTION_DIM + VIEWS * TOKENS * CHANNELS)
    steps = max(64, int(1.1 * gigabytes * 1e9 / step_bytes))  # compression saves ~8%: stay above the size
    per_episode = 200
    rng = np.random.default_rng(seed)
    spec = standard_spec("bench")

    def episodes():
        done = 0
        while done < steps:
            n = min(per_episode, steps - done)
            yield {
                "state": rng.standard_normal((n, STATE_DIM), dtype=np.float32),
                "action": rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
                "image_features": rng.standard_normal((n, VIEWS, TOKENS, CHANNELS), dtype=np.float32),
            }
            done += n

    return write_dataset(path, spec, episodes(), notes={"bench": True}, overwrite=True)


def _dir_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e9


def without_checksums(source: Path, target: Path) -> Path:
    """The same dataset with its chunks compressed alike but carrying no crc32c (and no
    ``checksums`` attribute): what the sampler read before checksums, to measure what they cost."""
    import zarr
    from zarr.codecs import ZstdCodec

    src = zarr.open_group(str(source), mode="r")
    dst = zarr.open_group(str(target), mode="w-", zarr_format=3)
    for name, array in src.arrays():
        out = dst.create_array(name, shape=array.shape, chunks=array.chunks, dtype=array.dtype,
                               compressors=(ZstdCodec(level=0),))
        rows = array.chunks[0] * 64
        for start in range(0, array.shape[0], rows):
            out[start : start + rows] = array[start : start + rows]
    dst.attrs.update({k: v for k, v in src.attrs.items() if k != "checksums"})
    return target


def sampler_child(path: str, batches: int, batch: int) -> dict[str, Any]:
    """Runs in a fresh process: stream batches from the on-disk store, report rate and peak RSS."""
    from hpt_kit.data.store import Dataset
    from hpt_kit.data.stream import BlockSampler

    t = time.perf_counter()
    ds = Dataset(path)  # with checksums: every chunk file's presence is checked here
    open_ms = (time.perf_counter() - t) * 1e3
    sampler = BlockSampler(ds, 1, CHUNK, ["state", "image_features"], seed=0, refresh=0)  # never waits for the disk
    rng = np.random.default_rng(0)
    for _ in range(3):
        sampler.sample(batch, rng)
    t = time.perf_counter()
    for _ in range(batches):
        b = sampler.sample(batch, rng)
    seconds = time.perf_counter() - t
    sampler.close()
    assert b["image_features"].shape == (batch, 1, VIEWS, TOKENS, CHANNELS)
    return {
        "samples_per_s": batches * batch / seconds,
        "open_ms": open_ms,
        "peak_rss_mb": peak_rss_mb(),
        "resident_block_mb": sampler.resident_bytes() / 1e6,
        "reuse": sampler.reuse(),  # windows served per step read from disk
        "steps_read_per_s": batches * batch / seconds / max(sampler.reuse(), 1e-9),
    }


def _sampler_run(path: Path, batches: int, batch: int) -> dict[str, Any]:
    cmd = [sys.executable, "-c", f"import json, hpt_kit.lab.bench as b; print(json.dumps(b.sampler_child({str(path)!r}, {batches}, {batch})))"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_sampler(store_gb: float, batches: int, batch: int = 256, store: Path | None = None, rounds: int = 2) -> dict[str, Any]:
    """The streaming sampler on the store, and on the same data without chunk checksums: ``rounds``
    runs of each, alternated so that both see the same machine; the median of each is reported.
    ``steps_read_per_s`` is the disk side (steps decoded per second), where the checksum is paid."""
    with tempfile.TemporaryDirectory(prefix="hpt-bench-") as tmp:
        path = Path(store) if store else Path(tmp) / "bench.zarr"
        if not path.exists():
            make_store(path, store_gb)
        plain = without_checksums(path, Path(tmp) / "plain.zarr")
        runs: dict[str, list[dict[str, Any]]] = {"checksums": [], "plain": []}
        for _ in range(rounds):
            runs["checksums"].append(_sampler_run(path, batches, batch))
            runs["plain"].append(_sampler_run(plain, batches, batch))

        def median(rows: list[dict[str, Any]]) -> dict[str, Any]:
            return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}

        result = median(runs["checksums"])
        result["without_checksums"] = median(runs["plain"])
        result["store_gb"] = _dir_gb(path)
        result["batch"] = batch
        return result


def run(
    presets: Sequence[str] = ("small", "base"),
    batches: Sequence[int] = (64, 256),
    steps: int = 3,
    act_calls: int = 300,
    store_gb: float = 2.0,
    sampler_batches: int = 200,
    store: Path | None = None,
    device: str = "auto",
    compile: bool = False,
    parts: Sequence[str] = PARTS,
    on_progress: Callable[[str], None] | None = None,
    backends: Sequence[str] = ("torch",),
    eval_embodiments: Sequence[str] | None = None,
    eval_episodes: int = 8,
    eval_workers: int | None = None,
    import_options: Mapping[str, Any] | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Every part asked for; ``backends``: the act part's (``torch``, ``onnx``, ``onnx-int8``, ``openvino``; all but torch on the CPU only);
    ``eval_*``: the eval part's embodiments (default: ``bench_eval.EVAL_EMBODIMENTS``), episodes and
    worker processes (default: one per core); ``import_options``: :func:`bench_import.bench_import`'s
    (the import part, alone: no matmul peak nor device)."""
    if "import" in parts:
        from hpt_kit.lab.bench_import import bench_import

        imported = bench_import(**dict(import_options or {}), on_progress=on_progress)
        if set(parts) == {"import"}:
            return {"import": imported}
    dev = pick_device(device)
    if any(b != "torch" for b in backends) and "act" in parts and dev.type != "cpu":
        raise ValueError(f"the {', '.join(b for b in backends if b != 'torch')} backend runs on the CPU; measure it with device 'cpu', not {dev}")
    say = on_progress or (lambda msg: None)
    say("matmul peak")
    result: dict[str, Any] = {"device": device_name(dev), "torch": torch.__version__, "compiled": compile}
    result["matmul_gflops"] = matmul_gflops(dev)
    peak = result["matmul_gflops"]
    result["precision"] = precision
    if dev.type == "cuda" or precision == "bf16":  # the training step's products run in bf16
        result["matmul_gflops_bf16"] = matmul_gflops(dev, torch.bfloat16)
        peak = result["matmul_gflops_bf16"]
    result["mfu_peak_gflops"] = peak
    result["train"] = []
    for preset in presets if "train" in parts else ():
        for b in batches:
            for frozen in (False, True):
                say(f"train {preset} batch {b} {'frozen' if frozen else 'trained'}")
                result["train"].append(bench_train(preset, b, frozen, dev, steps, compile, precision))
    result["act"] = []
    for preset in presets if "act" in parts else ():
        for backend in backends:
            say(f"act {preset} ({backend})")
            result["act"].append(bench_act(preset, dev, act_calls, compile, backend))
    add_speedups(result["act"])
    if "mixed" in parts:
        say("mixed-embodiment step")
        result["mixed"] = bench_mixed(presets[0], dev, max(batches[0], 2), steps)
    say("model FLOPs")
    for record in result["train"]:
        count_train_flops(record, dev, peak)
        say(f"train floors {record['preset']} batch {record['batch']} {record['trunk']}")
        train_floors(record, dev, peak)
    floors: dict[str, tuple[float, float, int]] = {}  # per preset: the same network whatever the backend
    for record in result["act"]:
        if record["preset"] not in floors:
            torch.manual_seed(0)
            model = standard_model(record["preset"]).to(dev)
            floors[record["preset"]] = (act_flops(model, dev), *act_matmul_ms(model, dev))
        record["flops_per_call"], record["matmul_ms"], record["matmul_calls"] = floors[record["preset"]]
    if "sampler" in parts:
        say(f"sampler ({store_gb:g} GB store)")
        result["sampler"] = bench_sampler(store_gb, sampler_batches, store=store)
    if "serve" in parts:
        from hpt_kit.lab.bench_serve import bench_serve

        say(f"policy server ({presets[0]}, loopback)")
        same = [r["p50_ms"] for r in result["act"] if r["preset"] == presets[0] and r["backend"] == "torch" and not r["compiled"]]
        in_process = same[0] if same else bench_act(presets[0], dev, act_calls)["p50_ms"]
        result["serve"] = bench_serve(presets[0], dev, in_process)
    if "eval" in parts:
        from hpt_kit.lab.bench_eval import EVAL_EMBODIMENTS, bench_eval

        names = tuple(eval_embodiments or EVAL_EMBODIMENTS)
        say(f"evaluation throughput ({', '.join(names)}, {eval_episodes} episodes, serial vs workers)")
        result["eval"] = bench_eval(presets[0], names, eval_episodes, eval_workers)
    if "import" in parts:
        result["import"] = imported
    return result
