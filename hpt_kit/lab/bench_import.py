"""``hpt-kit bench --part import``: how fast sources import, serially, in local workers and on Ray,
and what that says of a DROID-size import on 1, 64 and 2,048 workers.

The bench writes each source with the importer plugin's own test writer (a LeRobot v3.0 dataset of
H.264 videos with textured frames, an RLDS TFRecord dataset of JPEG and PNG frames; from a checkout
of the kit, where ``plugins/*/tests`` are), then imports it once per mode, each in a fresh Python
process as a command would: ``serial`` (``import_dataset``, one store), ``workers`` (``import
--workers N``: a local pool, one shard per unit) and, when asked, ``ray`` (``import --address`` on a
one-machine Ray instance started for the bench). For each it reports the wall time of the process,
episodes and frames (steps) per second, the start-up (from the import's call to its first unit's
start, or serially to its first episode written: plugins, source metadata, the pool's or Ray's
workers), every worker's peak RSS, and
the speed-up over serial. The manifest commit, which the driver does alone after the last unit, is
timed by writing the finished dataset's manifest again (per shard).

The DROID projection scales the measured worker-seconds per frame by DROID's frames and pixels
(:data:`DROID`), divides the work among the workers, and adds the start-up and the serial commit
(its measured cost per shard times the shards: ``UNITS_PER_WORKER`` per worker); reading the source
at ``storage_gbps`` (an assumption, not measured: set it to your filesystem's aggregate bandwidth)
bounds it from below. It assumes a unit's cost grows with frames times pixels (decoding and
resizing dominate) and that workers do not slow each other but through storage; a measurement on a
busy machine inflates every figure.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FORMATS = ("lerobot", "rlds")
STEPS, FRAME, CAMERAS, FPS = 50, (90, 160), ("exterior_1", "exterior_2", "wrist"), 15  # DROID's 3 views at half size
PROJECT_WORKERS = (1, 64, 2048)
# DROID (Khazatsky et al. 2024, arXiv:2403.12945): 76k successful trajectories, 350 hours at 15 Hz, so
# 350 * 3600 * 15 / 76,000 = 249 frames an episode; 92k episodes counting the unsuccessful ones; three
# 180x320 camera views (two exterior, one wrist) as its RLDS and LeRobot releases store them.
DROID = {"episodes": 92_000, "frames_per_episode": 249, "cameras": 3, "height": 180, "width": 320,
         "source": "arXiv:2403.12945 (76k trajectories, 350 h at 15 Hz); 92k episodes with failures; 180x320 views"}
WRITERS = {"lerobot": ("plugins/lerobot/tests/lerobot_fixtures.py", "write_lerobot"),
           "rlds": ("plugins/rlds/tests/rlds_fixtures.py", "write_rlds")}


class BenchError(RuntimeError):
    """The bench cannot run here (no source writer, an unknown format); the message says why."""


def _writer(fmt: str) -> Callable[..., Path]:
    """A format's source writer from the importer plugin's tests, loaded by file path."""
    if fmt not in WRITERS:
        raise BenchError(f"bench import: format {fmt!r} has no source writer; choose from {', '.join(WRITERS)}")
    rel, name = WRITERS[fmt]
    path = Path(__file__).resolve().parents[2] / rel
    if not path.is_file():
        raise BenchError(f"bench import: {rel} is not here; run the import bench from a checkout of hpt-kit")
    spec = importlib.util.spec_from_file_location(f"bench_{fmt}_writer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def write_source(fmt: str, root: Path, episodes: int, steps: int = STEPS) -> Path:
    """A source of ``episodes`` episodes in ``fmt`` under ``root``; returns what ``import`` reads.
    One already written there whole (``root/written``, the path it gave) is reused."""
    done = Path(root) / "written"
    if done.is_file():
        return Path(done.read_text())
    write = _writer(fmt)
    if fmt == "lerobot":
        path = write(root, episodes, steps, FRAME, CAMERAS, version="v3.0", codec="h264", fps=FPS,
                     episodes_per_file=max(1, min(50, episodes // 4)), noise=True)
    else:
        path = write(root, episodes, steps, FRAME, CAMERAS, shards=max(1, min(64, episodes // 4)))
    done.write_text(str(path))
    return path


def _size_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e9


def child(mode: str, fmt: str, source: str, out: str, workers: int, address: str | None) -> dict[str, Any]:
    """One import in this (fresh) process: ``serial`` or fanned out (``workers``, ``ray``)."""
    from hpt_kit.core.registry import load_registry
    from hpt_kit.data.fanout import import_sharded
    from hpt_kit.data.importing import ImportOptions, finish_spec, import_dataset
    from hpt_kit.data.shards import write_manifest
    from hpt_kit.data.store import Dataset
    from hpt_kit.engine import peak_rss_mb

    called = time.perf_counter()
    opts = ImportOptions(name=f"bench-{fmt}")
    first: list[float] = []
    records: list[Any] = []
    if mode == "serial":
        registry = load_registry(embodiments=False)

        def on_episode(i: int, steps: int) -> None:
            if not first:
                first.append(time.perf_counter())

        import_dataset(registry.importer(fmt), source, out, opts, registry, overwrite=True, on_episode=on_episode)
    else:
        def on_progress(p: Any) -> None:
            if p.records and not records:  # the first unit began its own seconds before it finished
                first.append(time.perf_counter() - p.records[0]["seconds"])
            records[:] = p.records

        import_sharded(fmt, source, out, opts, overwrite=True, workers=workers, address=address, on_progress=on_progress)
    seconds = time.perf_counter() - called
    ds = Dataset(out)
    result = {"mode": mode, "seconds": seconds, "episodes": ds.num_episodes, "steps": ds.num_steps,
              "startup_s": (first[0] - called) if first else None, "driver_peak_rss_mb": peak_rss_mb()}
    if mode != "serial":
        workers_rss: dict[str, float] = {}
        for r in records:
            key = f"{r.get('host')}:{r.get('pid')}"
            workers_rss[key] = max(workers_rss.get(key, 0.0), r.get("peak_rss_mb") or 0.0)
        names = [s["path"] for s in ds.attrs["shards"]]
        times = []
        for _ in range(3):  # the commit again, on the finished shards: the same manifest
            t = time.perf_counter()
            write_manifest(out, names, ds.attrs["provenance"], finish_spec)
            times.append(time.perf_counter() - t)
        result |= {"shards": len(names), "worker_peak_rss_mb": sorted(workers_rss.values()),
                   "unit_seconds": sum(r["seconds"] for r in records), "commit_s": statistics.median(times)}
    return result


def _run_child(mode: str, fmt: str, source: Path, out: Path, workers: int, address: str | None) -> dict[str, Any]:
    call = f"child({mode!r}, {fmt!r}, {str(source)!r}, {str(out)!r}, {workers}, {address!r})"
    cmd = [sys.executable, "-c", f"import json; from hpt_kit.lab.bench_import import child; print(json.dumps({call}))"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise BenchError(f"bench import: {mode} import of {fmt} failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    result["episodes_per_s"] = result["episodes"] / wall
    result["frames_per_s"] = result["steps"] / wall
    return result


class _LocalRay:
    """A one-machine Ray instance for the bench (``ray start --head``), stopped on exit."""

    def __init__(self, workers: int):
        import secrets
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.workers = workers
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}

    def __enter__(self) -> _LocalRay:
        import os

        os.environ.update(self.env)  # the import's children connect with the same token
        t = time.perf_counter()
        subprocess.run([self.ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                        "--num-cpus", str(self.workers), "--include-dashboard=false", "--disable-usage-stats"],
                       check=True, capture_output=True, timeout=300)
        self.start_s = time.perf_counter() - t
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        import os

        t = time.perf_counter()
        subprocess.run([self.ray, "stop"], capture_output=True, timeout=300)
        self.stop_s = time.perf_counter() - t
        for key in self.env:
            os.environ.pop(key, None)


def project(per_frame_s: float, startup_s: float, commit_per_shard_s: float, bytes_per_frame: float,
            storage_gbps: float, workers: Sequence[int] = PROJECT_WORKERS) -> list[dict[str, Any]]:
    """Projected wall time of a DROID-size import (see the module docstring), per worker count:
    ``per_frame_s`` worker-seconds and ``bytes_per_frame`` source bytes per DROID frame (all views),
    ``startup_s`` once, ``commit_per_shard_s`` per shard (``UNITS_PER_WORKER`` a worker)."""
    from hpt_kit.data.fanout import UNITS_PER_WORKER

    frames = DROID["episodes"] * DROID["frames_per_episode"]
    work = per_frame_s * frames
    read_s = bytes_per_frame * frames / (storage_gbps * 1e9)
    rows = []
    for n in workers:
        shards = min(DROID["episodes"], UNITS_PER_WORKER * n) if n > 1 else 1
        compute = work / n
        commit = commit_per_shard_s * shards
        wall = startup_s + max(compute, read_s) + commit
        bound = "storage" if read_s > compute else "compute"
        if commit > max(compute, read_s):
            bound = "commit"
        rows.append({"workers": n, "shards": shards, "compute_s": compute, "read_s": read_s, "commit_s": commit,
                     "startup_s": startup_s, "wall_s": wall, "wall_h": wall / 3600, "bound": bound})
    return rows


def bench_import(
    episodes: int = 8,
    formats: Sequence[str] = FORMATS,
    workers: int = 2,
    ray: bool = False,
    storage_gbps: float = 1.0,
    steps: int = STEPS,
    keep: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Per format: the source's size, each mode's figures and the DROID projection. ``keep``: a
    folder where the sources are written and kept, and reused by a later run of the same size."""
    say = on_progress or (lambda msg: None)
    if ray and importlib.util.find_spec("ray") is None:
        raise BenchError("bench import: --import-ray needs Ray: pip install 'hpt-kit[cluster]'")
    records = []
    with tempfile.TemporaryDirectory(prefix="hpt-bench-import-") as tmp:
        for fmt in formats:
            say(f"import: writing a {fmt} source of {episodes} episodes (or reusing one in {keep})" if keep else
                f"import: writing a {fmt} source of {episodes} episodes")
            folder = Path(keep) / f"{fmt}-{episodes}x{steps}" if keep else Path(tmp) / f"src-{fmt}"
            source = write_source(fmt, folder, episodes, steps)
            modes = [("serial", 1, None), ("workers", workers, None)]
            runs = {}
            for mode, n, address in modes:
                say(f"import: {fmt}, {mode}{f' ({n})' if n > 1 else ''}")
                runs[mode] = _run_child(mode, fmt, source, Path(tmp) / f"{fmt}-{mode}.zarr", n, address)
                shutil.rmtree(Path(tmp) / f"{fmt}-{mode}.zarr", ignore_errors=True)
                say(_said(fmt, mode, runs[mode]))
            if ray:
                say(f"import: {fmt}, on a local Ray instance ({workers} CPUs)")
                with _LocalRay(workers) as cluster:
                    runs["ray"] = _run_child("ray", fmt, source, Path(tmp) / f"{fmt}-ray.zarr", workers, cluster.address)
                runs["ray"] |= {"ray_start_s": cluster.start_s, "ray_stop_s": cluster.stop_s}
                say(_said(fmt, "ray", runs["ray"]))
            for run in runs.values():
                run["speedup"] = runs["serial"]["wall_s"] / run["wall_s"]
            records.append(_summary(fmt, source, episodes, runs, storage_gbps))
    return records


def _said(fmt: str, mode: str, run: dict[str, Any]) -> str:
    """One mode's figures as a progress line, so a later failure (a full disk) does not lose them."""
    rss = run.get("worker_peak_rss_mb") or [run["driver_peak_rss_mb"]]
    return (f"import: {fmt}, {mode}: {run['wall_s']:.1f} s, {run['episodes_per_s']:.1f} episodes/s, "
            f"{run['frames_per_s']:.0f} frames/s, peak RSS {max(rss):.0f} MB")


def _summary(fmt: str, source: Path, episodes: int, runs: dict[str, Any], storage_gbps: float) -> dict[str, Any]:
    fanned = runs["workers"]
    steps = fanned["steps"]
    pixels = len(CAMERAS) * FRAME[0] * FRAME[1]
    droid_pixels = DROID["cameras"] * DROID["height"] * DROID["width"]
    scale = droid_pixels / pixels  # a DROID frame (all its views) against one of this source's
    size = _size_gb(source)
    per_frame_s = fanned["unit_seconds"] / steps * scale
    bytes_per_frame = size * 1e9 / steps * scale
    commit_per_shard_s = fanned["commit_s"] / fanned["shards"]
    return {
        "format": fmt, "episodes": episodes, "steps": steps, "cameras": len(CAMERAS), "frame": list(FRAME),
        "source_gb": size, "runs": runs, "commit_per_shard_s": commit_per_shard_s,
        "droid": {**DROID, "frames": DROID["episodes"] * DROID["frames_per_episode"], "per_frame_s": per_frame_s,
                  "pixel_scale": scale, "source_tb": bytes_per_frame * DROID["episodes"] * DROID["frames_per_episode"] / 1e12,
                  "storage_gbps": storage_gbps, "storage_assumed": True,
                  "startup_from": "ray" if "ray" in runs else "workers",
                  "projection": project(per_frame_s, runs.get("ray", fanned)["startup_s"] or 0.0, commit_per_shard_s,
                                        bytes_per_frame, storage_gbps)},
    }

