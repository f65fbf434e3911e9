"""``hpt-kit bench --part import`` at a tiny size: the source writers, one import per mode (here in
this process: the bench runs each in a fresh one), the commit timed again, and the DROID projection's
arithmetic. Speed itself is not asserted."""

from __future__ import annotations

import subprocess

import pytest

from hpt_kit.lab.bench_import import DROID, child, project, write_source
from tests.conftest import HPT_KIT


@pytest.mark.parametrize("fmt", ["rlds", "lerobot"])
def test_one_import_per_mode_reports_its_figures(tmp_path, fmt):
    source = write_source(fmt, tmp_path / "src", episodes=3, steps=4)
    serial = child("serial", fmt, str(source), str(tmp_path / "serial.zarr"), 1, None)
    units = child("workers", fmt, str(source), str(tmp_path / "units.zarr"), 1, None)  # units, one after another here
    assert (serial["episodes"], serial["steps"]) == (units["episodes"], units["steps"]) == (3, 12)
    assert 0 < serial["startup_s"] < serial["seconds"] and serial["driver_peak_rss_mb"] > 0
    assert units["shards"] == 3 and len(units["worker_peak_rss_mb"]) == 1 and units["worker_peak_rss_mb"][0] > 0
    assert 0 < units["unit_seconds"] < units["seconds"] and units["commit_s"] > 0 and units["startup_s"] >= 0


def test_the_droid_projection_divides_the_work_and_adds_the_serial_commit():
    rows = project(per_frame_s=0.01, startup_s=5.0, commit_per_shard_s=0.02, bytes_per_frame=1e5, storage_gbps=1.0)
    frames = DROID["episodes"] * DROID["frames_per_episode"]
    one, many, most = rows
    assert [r["workers"] for r in rows] == [1, 64, 2048] and [r["shards"] for r in rows] == [1, 256, 8192]
    assert one["compute_s"] == pytest.approx(0.01 * frames) and many["compute_s"] == pytest.approx(0.01 * frames / 64)
    assert most["read_s"] == pytest.approx(1e5 * frames / 1e9) and most["commit_s"] == pytest.approx(0.02 * 8192)
    assert most["wall_s"] == pytest.approx(5.0 + max(most["compute_s"], most["read_s"]) + most["commit_s"])
    assert (one["bound"], most["bound"]) == ("compute", "storage")
    slow_commit = project(0.0001, 0.0, 1.0, 1.0, 1000.0, workers=(2048,))[0]
    assert slow_commit["bound"] == "commit"


def test_an_unknown_source_format_is_refused_in_one_line():
    out = subprocess.run([HPT_KIT, "bench", "--part", "import", "--import-format", "hdf5"], capture_output=True, text=True)
    assert out.returncode == 1 and "no source writer for hdf5; choose lerobot or rlds" in out.stderr


def test_a_kept_source_is_reused_not_written_again(tmp_path):
    first = write_source("rlds", tmp_path / "kept", episodes=2, steps=3)
    written = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    assert write_source("rlds", tmp_path / "kept", episodes=2, steps=3) == first
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == written
