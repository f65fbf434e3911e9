"""Load for ``hpt-kit bench --part serve``: N robots acting against a server, each in its own thread
with its own connection, as ``python -m hpt_kit.lab.serve_load`` in a process of its own (so the
clients do not share the server's interpreter lock). Prints one JSON object: round-trip times and
throughput."""

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
    args = parser.parse_args()
    print(json.dumps(drive(args.url, args.embodiment, args.clients, args.steps, args.warmup)))


if __name__ == "__main__":
    main()
