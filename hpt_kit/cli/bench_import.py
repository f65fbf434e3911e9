"""The import part of ``hpt-kit bench``, printed: per format, one row per mode, then the DROID projection."""

from __future__ import annotations

from typing import Any


def print_import(out: Any, records: list[dict[str, Any]]) -> None:
    from rich.table import Table

    for r in records:
        table = Table(title=f"import {r['format']}: {r['episodes']} episodes, {r['steps']} frames of {r['cameras']} views "
                            f"{r['frame'][0]}x{r['frame'][1]}, source {r['source_gb'] * 1e3:.1f} MB")
        for col in ("mode", "wall s", "episodes/s", "frames/s", "start-up s", "peak RSS MB (driver; workers)", "speed-up"):
            table.add_column(col, justify="right")
        for mode, run in r["runs"].items():
            rss = f"{run['driver_peak_rss_mb']:.0f}"
            if run.get("worker_peak_rss_mb"):
                rss += "; " + ", ".join(f"{m:.0f}" for m in run["worker_peak_rss_mb"])
            start = "" if run["startup_s"] is None else f"{run['startup_s']:.1f}"
            if "ray_start_s" in run:
                start += f" (+ ray start {run['ray_start_s']:.1f})"
            table.add_row(mode, f"{run['wall_s']:.1f}", f"{run['episodes_per_s']:.2f}", f"{run['frames_per_s']:.0f}", start, rss,
                          f"{run['speedup']:.2f}x")
        out.print(table)
        d = r["droid"]
        out.print(f"  manifest commit (serial, after the last unit): {r['commit_per_shard_s'] * 1e3:.1f} ms a shard", highlight=False)
        table = Table(title=f"projected: DROID-size import ({d['episodes']:,} episodes, {d['frames']:,} frames of {d['cameras']} views "
                            f"{d['height']}x{d['width']}, ~{d['source_tb']:.2f} TB at this source's bytes a frame; "
                            f"{d['per_frame_s'] * 1e3:.1f} worker-ms a frame; storage {d['storage_gbps']:g} GB/s assumed)")
        for col in ("workers", "shards", "compute h", "read h", "commit min", "wall h", "bound"):
            table.add_column(col, justify="right")
        for row in d["projection"]:
            table.add_row(f"{row['workers']:,}", f"{row['shards']:,}", f"{row['compute_s'] / 3600:.2f}", f"{row['read_s'] / 3600:.2f}",
                          f"{row['commit_s'] / 60:.1f}", f"{row['wall_h']:.2f}", row["bound"])
        out.print(table)
