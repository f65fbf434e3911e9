"""``hpt-kit bench --part serve``: the policy server over loopback on the bench's standard model (two
embodiments of the standard shape, a prediction every step).

The server runs in a process of its own, as ``hpt-kit serve`` does; the robots run in another
(``hpt_kit.lab.serve_load``), one thread and one connection each. On a 2-core machine they do compete for the cores:
the figures are what one small machine does with the server and its clients together.

Network delay: one robot's control loop at 20 Hz (the MuJoCo arms' rate) through a
:class:`~hpt_kit.lab.delay_proxy.DelayProxy` adding 0, 20 and 50 ms to every round trip, acting per
step and streaming chunks; the figure is how often ``act`` took longer than the control period.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

NAMES = ("bench-a", "bench-b")
GOAL_OVERHEAD_MS = 1.0  # the serving goals: one robot's round trip at most this much over in-process act(),
GOAL_SCALING = 4.0  # and 32 robots (batching on) at least this many times one robot's actions/s


@contextmanager
def serving(preset: str, device: str, batching: bool) -> Iterator[str]:
    """A server process of its own (``python -m hpt_kit.lab.bench_serve``): no thread of this
    process (the act part's torch and ONNX Runtime pools) competes with it."""
    cmd = [sys.executable, "-m", "hpt_kit.lab.bench_serve", preset, device, "on" if batching else "off"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the bench server did not start: {proc.stderr.read()[-2000:]}")
        yield f"ws://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def load(url: str, embodiments: tuple[str, ...], clients: int, steps: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "hpt_kit.lab.serve_load", url, "--clients", str(clients), "--steps", str(steps)]
    for name in embodiments:
        cmd += ["--embodiment", name]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"serve load generator failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout)
    if "errors" in result:
        raise RuntimeError(f"serve load: {result['errors']}")
    return result


def bench_delays(
    url: str, delays_ms: tuple[float, ...] = (0.0, 20.0, 50.0), period_ms: float = 50.0, steps: int = 100
) -> list[dict[str, Any]]:
    """Missed control periods per added round trip and mode (per-step requests, streamed chunks)."""
    from hpt_kit.lab.delay_proxy import DelayProxy

    records = []
    for delay in delays_ms:
        with DelayProxy(int(url.rsplit(":", 1)[1]), delay / 1e3) as proxy:
            for mode in ("step", "chunks"):
                cmd = [sys.executable, "-m", "hpt_kit.lab.serve_load", proxy.url, "--embodiment", NAMES[0],
                       "--loop", mode, "--period-ms", str(period_ms), "--steps", str(steps), "--warmup", "5"]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if out.returncode != 0:
                    raise RuntimeError(f"serve control loop ({mode}, +{delay:g} ms) failed: {out.stderr.strip().splitlines()[-1:]}")
                records.append({**json.loads(out.stdout), "added_rtt_ms": delay})
    return records


def batched_in_process(preset: str, device: torch.device, robots: int = 32, repeats: int = 20) -> dict[str, Any]:
    """The ceiling under the batched server: the bench server's network predicting ``robots``
    histories (half per embodiment, as the load spreads them) in one ``predict_mixed`` call in this
    process, no network, no sessions; median of ``repeats`` calls."""
    from hpt_kit.lab.bench import _median_time, standard_batch, standard_model

    torch.manual_seed(0)
    model = standard_model(preset, NAMES).to(device).eval()
    per = robots // len(NAMES)
    batches = {n: {k: v for k, v in standard_batch(per, device, seed=i).items() if k != "action"} for i, n in enumerate(NAMES)}

    def call() -> None:
        with torch.inference_mode():
            model.predict_mixed(batches)

    seconds = _median_time(call, device, repeats, warmup=3)
    return {"robots": per * len(NAMES), "ms": seconds * 1e3, "predictions_per_s": per * len(NAMES) / seconds}


def bench_serve(preset: str, device: torch.device, in_process_p50_ms: float, steps: int = 200) -> dict[str, Any]:
    """Round trips for one robot (against ``in_process_p50_ms``, ``Policy.act`` on the same model),
    missed control periods behind added network delay (:func:`bench_delays`), and throughput and
    p99 for 8 and 32 robots over two embodiments, batching on and off; beside them the ceiling of
    32 robots' throughput, the network alone on 32 histories at once (:func:`batched_in_process`)."""
    out: dict[str, Any] = {"preset": preset, "in_process_p50_ms": in_process_p50_ms, "concurrent": [],
                           "batched_in_process": batched_in_process(preset, device)}
    for batching in (True, False):
        with serving(preset, str(device), batching) as url:
            if batching:
                out["one_client"] = load(url, NAMES[:1], 1, steps)
                out["delays"] = bench_delays(url)
            for clients in (8, 32):
                record = load(url, NAMES, clients, max(20, steps * 4 // clients))
                out["concurrent"].append({**record, "batching": batching})
    one = out["one_client"]
    out["round_trip_overhead_ms"] = one["p50_ms"] - in_process_p50_ms
    for r in out["concurrent"]:
        r["throughput_vs_one_client"] = r["actions_per_s"] / one["actions_per_s"]
    out["goals"] = serving_goals(out)
    return out


def serving_goals(out: dict[str, Any]) -> dict[str, Any]:
    """Each serving goal with the measured figure and its gap (how far short it falls; <= 0 when met):
    one robot's p50 round trip over in-process act(), and 32 batched robots' actions/s over one's."""
    overhead = out["round_trip_overhead_ms"]
    scaling = next(r["throughput_vs_one_client"] for r in out["concurrent"] if r["clients"] == 32 and r["batching"])
    scaled = {"goal": GOAL_SCALING, "measured": scaling, "gap": GOAL_SCALING - scaling, "met": scaling >= GOAL_SCALING}
    if "batched_in_process" in out:  # the most 32 served robots could reach: the network's own batched rate
        scaled["ceiling"] = out["batched_in_process"]["predictions_per_s"] / out["one_client"]["actions_per_s"]
    return {
        "one_robot_overhead_ms": {"goal": GOAL_OVERHEAD_MS, "measured": overhead, "gap": overhead - GOAL_OVERHEAD_MS,
                                  "met": overhead <= GOAL_OVERHEAD_MS},
        "robots_32_vs_one": scaled,
    }


def main() -> None:
    """The bench's server: the standard model's two embodiments, a prediction every step."""
    from hpt_kit.lab.bench import standard_model
    from hpt_kit.serve.fleet import Fleet, Served
    from hpt_kit.serve.server import PolicyServer, ServerConfig

    preset, device, batching = sys.argv[1], sys.argv[2], sys.argv[3] == "on"
    torch.manual_seed(0)
    model = standard_model(preset, NAMES)
    fleet = Fleet(model, {n: Served(model.specs[n], 1, None, "bench") for n in NAMES}, "bench", torch.device(device))
    server = PolicyServer(fleet, ServerConfig(port=0, batching=batching))
    asyncio.run(server.run(lambda port: print(f"port {port}", flush=True)))


if __name__ == "__main__":
    main()
