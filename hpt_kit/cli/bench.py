"""``hpt-kit bench``: training, inference and sampling speed on this machine."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class Backend(StrEnum):
    torch = "torch"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"
    openvino = "openvino"
    both = "both"  # torch and onnx


def bench_command(
    preset: Annotated[list[str] | None, typer.Option(help="Trunk preset(s) to measure (repeatable; default small and base).")] = None,
    batch: Annotated[list[int] | None, typer.Option(help="Training batch size(s) (repeatable; default 64 and 256).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Timed training steps per setting (median reported).")] = 3,
    act_calls: Annotated[int, typer.Option(min=1, help="Policy.act() calls timed per preset.")] = 300,
    store_gb: Annotated[float, typer.Option(help="Size of the on-disk dataset the sampler streams from.")] = 2.0,
    store: Annotated[Path | None, typer.Option(help="Reuse (or create) this store instead of a temporary one.")] = None,
    sampler_batches: Annotated[int, typer.Option(min=1, help="Sampler batches timed.")] = 200,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="Run training steps and act() through torch.compile.")] = False,
    precision: Annotated[
        str, typer.Option(help="Training steps' arithmetic, as [train] precision: auto (bf16 autocast on a GPU, fp32 on the CPU), fp32 or bf16.")
    ] = "auto",
    part: Annotated[
        list[str] | None,
        typer.Option(help="Measure only these parts (repeatable): train, act, mixed, sampler, serve, eval; default all. "
                     "import (sources imported serially, in workers, on Ray; a DROID projection) runs only when named."),
    ] = None,
    eval_embodiment: Annotated[
        list[str] | None,
        typer.Option(help="eval: state-only embodiment(s) to evaluate (repeatable; default metaworld-reach-v3 and robosuite-panda)."),
    ] = None,
    eval_episodes: Annotated[int, typer.Option(min=1, help="eval: episodes per run (serial, then in workers).")] = 8,
    eval_workers: Annotated[int | None, typer.Option(min=1, help="eval: worker processes (default: the CPU cores).")] = None,
    import_episodes: Annotated[int, typer.Option(min=1, help="import: episodes of each source written (50 steps, 3 views of 90x160).")] = 8,
    import_format: Annotated[list[str] | None, typer.Option(help="import: source format(s) (repeatable): lerobot, rlds; default both.")] = None,
    import_workers: Annotated[int, typer.Option(min=2, help="import: local worker processes (and Ray CPUs) to compare with serial.")] = 2,
    import_ray: Annotated[bool, typer.Option("--import-ray", help="import: also on a local Ray instance started for it.")] = False,
    import_storage_gbps: Annotated[
        float, typer.Option(min=0.001, help="import: the storage bandwidth (GB/s) the DROID projection assumes for reading the source.")
    ] = 1.0,
    import_dir: Annotated[
        Path | None, typer.Option(help="import: write the sources here and keep them; a later run of the same size reuses them.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    backend: Annotated[
        list[Backend] | None,
        typer.Option(help="act() on these backends (repeatable): torch (eager, or compiled with --compile), onnx (ONNX Runtime, CPU), "
                     "openvino (OpenVINO, CPU, fp32), onnx-int8 (int8 weights, not exact), both (torch and onnx). Default torch."),
    ] = None,
) -> None:
    """Measure matmul peak, training throughput and MFU, act() latency, mixed-embodiment steps and sampler speed."""
    bad_formats = sorted(set(import_format or ()) - {"lerobot", "rlds"})
    if bad_formats:
        raise typer.BadParameter(f"no source writer for {', '.join(bad_formats)}; choose lerobot or rlds", param_hint="--import-format")
    from hpt_kit.cli.output import console
    from hpt_kit.lab.bench import ASKED_PARTS, PARTS, run

    unknown = sorted(set(part or ()) - set(PARTS) - set(ASKED_PARTS))
    if unknown:
        raise typer.BadParameter(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS + ASKED_PARTS)}", param_hint="--part")
    backends = _backends(backend or [Backend.torch])
    from hpt_kit.core.recipe import PRECISION

    if precision not in PRECISION:
        raise typer.BadParameter(f"{precision!r}; known: {', '.join(PRECISION)}", param_hint="--precision")
    if any(b != "torch" for b in backends) and "act" in (part or PARTS):
        from hpt_kit.train.step import pick_device

        if pick_device(device).type != "cpu":
            graph = next(b for b in backends if b != "torch")
            raise typer.BadParameter(f"the {graph} backend runs on the CPU; pass --device cpu (this is {device})", param_hint="--backend")

    result = run(
        presets=tuple(preset or ("small", "base")),
        batches=tuple(batch or (64, 256)),
        steps=steps,
        act_calls=act_calls,
        store_gb=store_gb,
        sampler_batches=sampler_batches,
        store=store,
        device=device,
        compile=compile,
        precision=precision,
        parts=tuple(part or PARTS),
        backends=backends,
        eval_embodiments=tuple(eval_embodiment or ()),
        eval_episodes=eval_episodes,
        eval_workers=eval_workers,
        import_options={"episodes": import_episodes, "formats": tuple(import_format or ("lerobot", "rlds")),
                        "workers": import_workers, "ray": import_ray, "storage_gbps": import_storage_gbps, "keep": import_dir},
        on_progress=lambda msg: console.print(f"bench: {msg}", style="dim", highlight=False),
    )
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print(result)


def _backends(chosen: list[Backend]) -> tuple[str, ...]:
    """The act part's backends in the order given, each once; ``both`` is torch and onnx."""
    names = [n for b in chosen for n in (("torch", "onnx") if b is Backend.both else (b.value,))]
    return tuple(dict.fromkeys(names))


def _print(result: dict) -> None:
    """The human-readable report: one table or line per part measured."""
    from rich.table import Table

    from hpt_kit.cli.output import stdout_console

    out = stdout_console()
    if "import" in result:
        from hpt_kit.cli.bench_import import print_import

        print_import(out, result["import"])
    if "device" not in result:  # the import part alone
        return
    out.print(f"device {result['device']}, torch {result['torch']}{', compiled' if result['compiled'] else ''}"
              f"{', training in bf16 autocast' if result['precision'] == 'bf16' else ''}, matmul peak {result['matmul_gflops']:.0f} GFLOP/s (fp32)"
              + (f", {result['matmul_gflops_bf16']:.0f} (bf16)" if "matmul_gflops_bf16" in result else ""))
    if result["train"]:
        table = Table(title="training step (standard shape)")
        for col in ("preset", "batch", "trunk", "samples/s", "ms/step", "GFLOP/sample", "MFU", "floor ms", "matmuls ms"):
            table.add_column(col, justify="right")
        for r in result["train"]:  # floor: the step's FLOPs at the measured peak; matmuls: its products replayed
            table.add_row(r["preset"], str(r["batch"]), r["trunk"], f"{r['samples_per_s']:.0f}", f"{r['step_ms']:.1f}",
                          f"{r['flops_per_sample'] / 1e9:.3f}", f"{r['mfu']:.1%}", f"{r['flops_floor_ms']:.1f}", f"{r['matmul_ms']:.1f}")
        out.print(table)
    if result["act"]:
        table = Table(title="Policy.act() at batch 1")
        for col in ("preset", "backend", "p50 ms", "p99 ms", "speed-up", "MFLOP/call", "floor ms", "matmuls ms"):
            table.add_column(col, justify="right")
        for r in result["act"]:  # floor: the call's FLOPs at the measured matmul peak
            floor = r["flops_per_call"] / (result["mfu_peak_gflops"] * 1e6)
            table.add_row(
                r["preset"],
                r["backend"] + (" (compiled)" if r["compiled"] else ""),
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['speedup']:.2f}x" if "speedup" in r else "",  # over the torch backend's p50
                f"{r['flops_per_call'] / 1e6:.0f}",
                f"{floor:.2f}",
                f"{r['matmul_ms']:.2f}",  # the call's matrix products alone, replayed at their shapes
            )
        out.print(table)
    if "mixed" in result:
        m = result["mixed"]
        out.print(f"mixed batch of {m['embodiments']} embodiments ({m['preset']}, {m['batch']} samples): one step "
                  f"{m['mixed_step_ms']:.1f} ms vs one step per embodiment {m['separate_steps_ms']:.1f} ms ({m['speedup']:.2f}x)")
    if "serve" in result:
        _print_serve(out, result["serve"])
    if "eval" in result:
        _print_eval(out, result["eval"])
    if "sampler" in result:
        s = result["sampler"]
        out.print(f"sampler: {s['samples_per_s']:.0f} samples/s (batches of {s['batch']}) from a {s['store_gb']:.2f} GB store, "
                  f"peak RSS {s['peak_rss_mb']:.0f} MB, each step read reused {s['reuse']:.1f}x")
        plain = s["without_checksums"]
        out.print(f"  chunk checksums: {s['steps_read_per_s']:.0f} steps read/s with, {plain['steps_read_per_s']:.0f} without; "
                  f"{s['samples_per_s']:.0f} vs {plain['samples_per_s']:.0f} samples/s; opening {s['open_ms']:.1f} vs {plain['open_ms']:.1f} ms")


def _print_serve(out, s: dict) -> None:
    from rich.table import Table

    one = s["one_client"]
    out.print(f"policy server ({s['preset']}, loopback): one robot p50 {one['p50_ms']:.2f} ms, p99 {one['p99_ms']:.2f} ms "
              f"(in-process act {s['in_process_p50_ms']:.2f} ms: +{s['round_trip_overhead_ms']:.2f} ms), {one['actions_per_s']:.0f} actions/s")
    table = Table(title="policy server, robots over two embodiments")
    for col in ("robots", "batching", "actions/s", "x one robot", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for r in s["concurrent"]:
        table.add_row(str(r["clients"]), "on" if r["batching"] else "off", f"{r['actions_per_s']:.0f}",
                      f"{r['throughput_vs_one_client']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}")
    out.print(table)
    if "goals" in s:
        o, g = s["goals"]["one_robot_overhead_ms"], s["goals"]["robots_32_vs_one"]
        out.print(f"goals: one robot within {o['goal']:g} ms of in-process act(): +{o['measured']:.2f} ms, "
                  + ("met" if o["met"] else f"{o['gap']:.2f} ms short")
                  + f"; 32 robots >= {g['goal']:g}x one robot's actions/s: {g['measured']:.1f}x, "
                  + ("met" if g["met"] else f"{g['gap']:.1f}x short")
                  + (f" (ceiling {g['ceiling']:.1f}x: the network alone predicts {s['batched_in_process']['predictions_per_s']:.0f}"
                     f" robots' chunks/s, {s['batched_in_process']['robots']} at once in process)" if "ceiling" in g else ""),
                  highlight=False)
    if s.get("delays"):
        _print_delays(out, s["delays"])


def _print_delays(out, records: list) -> None:
    from rich.table import Table

    period = records[0]["period_ms"]
    table = Table(title=f"one robot's loop at {period:g} ms behind added network delay: per-step requests vs streamed chunks")
    for col in ("added round trip ms", "mode", "missed periods", "act p50 ms", "act p99 ms", "chunks"):
        table.add_column(col, justify="right")
    for r in records:
        table.add_row(f"{r['added_rtt_ms']:g}", r["mode"], f"{r['missed']}/{r['steps']} ({r['missed_fraction']:.0%})",
                      f"{r['act_p50_ms']:.2f}", f"{r['act_p99_ms']:.2f}", str(r.get("chunks", "")))
    out.print(table)


def _print_eval(out, records: list) -> None:
    from rich.table import Table

    table = Table(title="evaluation throughput (untrained policy; serial, then worker processes with one batched policy)")
    for col in ("embodiment", "episodes", "workers", "serial ep/min", "parallel ep/min", "speed-up", "serial steps/s", "parallel steps/s"):
        table.add_column(col, justify="right")
    for r in records:
        s, p = r["serial"], r["parallel"]
        table.add_row(r["embodiment"], str(r["episodes"]), str(p["workers"]), f"{s['episodes_per_min']:.1f}",
                      f"{p['episodes_per_min']:.1f}", f"{r['speedup']:.2f}x", f"{s['env_steps_per_s']:.0f}", f"{p['env_steps_per_s']:.0f}")
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
