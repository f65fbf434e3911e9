"""Load for ``hpt-kit bench --part serve``: N robots acting against a server, each in its own thread
with its own connection, as ``python -m hpt_kit.lab.serve_load`` in a process of its own (so the
clients do not share the server's interpreter lock). Prints one JSON object: round-trip times and
throughput; or, with ``--loop step|chunks``, one robot's control loop at a fixed period and how
often it missed it."""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import numpy as np


def drive(url: str, embodiments: list[str], clients: int, steps: int, warmup: int, seed: int = 0) -> dict:
    """``clients`` robots, spread over ``embodiments`` in turn, each resetting then acting ``warmup +
    steps`` times on random observations of the served shapes; only the last ``steps`` are timed."""
    from hpt_kit.client import PolicyClient

    times: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients)

    def robot(i: int) -> None:
        try:
            with PolicyClient(url, embodiments[i % len(embodiments)], robot_id=f"load-{i}") as client:
                observation = _observation(client.metadata["embodiments"][client.embodiment]["observation"], seed + i)
                client.reset()
                for _ in range(warmup):
                    client.act(observation)
                barrier.wait()
                for _ in range(steps):
                    t = time.perf_counter()
                    client.act(observation)
                    times[i].append(time.perf_counter() - t)
        except Exception as exc:  # noqa: BLE001 - reported in the result
            errors.append(f"{type(exc).__name__}: {exc}")
            barrier.abort()

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    flat = sorted(x for ts in times for x in ts)
    if errors or not flat:
        return {"clients": clients, "errors": errors[:3]}
    busiest = max(sum(ts) for ts in times)  # the timed phase's length, as the slowest robot saw it
    return {
        "clients": clients,
        "embodiments": len(embodiments),
        "actions": len(flat),
        "p50_ms": statistics.median(flat) * 1e3,
        "p99_ms": flat[min(len(flat) - 1, int(0.99 * len(flat)))] * 1e3,
        "actions_per_s": len(flat) / busiest,
        "wall_s": wall,
    }


def control_loop(url: str, embodiment: str, mode: str, steps: int, period_s: float, warmup: int) -> dict:
    """One robot's loop at ``period_s``: each step an ``act`` (``mode`` "step": a round trip per
    step; "chunks": :class:`~hpt_kit.client.ChunkStream`), then a sleep to the period's end. A step
    whose ``act`` took longer than the period missed it (the command went out late). The first
    ``warmup`` steps (the first chunk's wait among them) are not counted."""
    from hpt_kit.client import ChunkStream, PolicyClient

    client = PolicyClient(url, embodiment, robot_id=f"loop-{mode}")
    controller = ChunkStream(client) if mode == "chunks" else client
    try:
        observation = _observation(client.metadata["embodiments"][embodiment]["observation"], 0)
        controller.reset()
        took: list[float] = []
        for step in range(warmup + steps):
            start = time.perf_counter()
            controller.act(observation)
            if step >= warmup:
                took.append(time.perf_counter() - start)
            time.sleep(max(0.0, period_s - (time.perf_counter() - start)))
    finally:
        controller.close()
    flat = sorted(took)
    missed = sum(t > period_s for t in took)
    record = {
        "mode": mode, "steps": steps, "period_ms": period_s * 1e3, "missed": missed, "missed_fraction": missed / steps,
        "act_p50_ms": statistics.median(flat) * 1e3, "act_p99_ms": flat[min(steps - 1, int(0.99 * steps))] * 1e3,
        "act_max_ms": flat[-1] * 1e3,
    }
    if mode == "chunks":
        record.update(chunks=controller.chunks_received, waits=controller.waits)
    return record


def _observation(fields: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, f in fields.items():
        if f["dtype"] == "str":
            out[name] = "pick up the block"
        elif f["dtype"] == "uint8":
            out[name] = rng.integers(0, 255, size=f["shape"], dtype=np.uint8)
        else:
            out[name] = rng.standard_normal(f["shape"]).astype(np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--embodiment", action="append", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--loop", choices=("step", "chunks"), help="one robot's control loop at --period-ms instead")
    parser.add_argument("--period-ms", type=float, default=50.0)
    args = parser.parse_args()
    if args.loop:
        result = control_loop(args.url, args.embodiment[0], args.loop, args.steps, args.period_ms / 1e3, args.warmup)
    else:
        result = drive(args.url, args.embodiment, args.clients, args.steps, args.warmup)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
