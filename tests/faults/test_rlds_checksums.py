"""Bytes flipped inside a TFRecord frame of an RLDS source: both CRC-32C checksums of every frame are
verified, so ``hpt-kit import rlds`` stops naming shard, record and episode (and writes nothing), or
with ``--skip-bad`` skips that episode, notes it, and imports the others exactly as they were written."""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from hpt_kit.data.store import Dataset
from tests.conftest import ROOT
from tests.faults.conftest import hpt

sys.path.insert(0, str(ROOT / "plugins" / "rlds" / "tests"))
from rlds_fixtures import STEPS, episode_values, write_rlds  # noqa: E402

pytestmark = pytest.mark.slow

SHARD = "toy_rlds-train.tfrecord-00001-of-00002"  # episodes 2 and 3


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_rlds(tmp_path_factory.mktemp("rlds"), episodes=4)


def frame_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset of the frame, length of its data) for every frame of a TFRecord file."""
    raw, out, at = path.read_bytes(), [], 0
    while at < len(raw):
        (length,) = struct.unpack_from("<Q", raw, at)
        out.append((at, length))
        at += 12 + length + 4
    return out


def damaged(source: Path, tmp_path: Path, where: str) -> Path:
    copy = Path(shutil.copytree(source, tmp_path / "src" / "1.0.0"))
    shard = copy / SHARD
    raw = bytearray(shard.read_bytes())
    start, length = frame_offsets(shard)[1 if where == "data" else 0]
    if where == "data":  # 16 bytes in the middle of record 1's data (episode 3)
        middle = start + 12 + length // 2
        raw[middle : middle + 16] = bytes(b ^ 0xFF for b in raw[middle : middle + 16])
    else:  # one bit of record 0's length field (episode 2): nothing after it can be trusted
        raw[start] ^= 0x01
    shard.write_bytes(bytes(raw))
    return copy


def test_a_flipped_byte_inside_a_record_is_named_and_nothing_is_imported(source, tmp_path):
    src, out = damaged(source, tmp_path, "data"), tmp_path / "x.zarr"
    result = hpt("import", "rlds", src, "--name", "toy", "--out", out, "--image-size", "32", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    length = frame_offsets(src / SHARD)[1][1]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {src}: episode 3: shard {SHARD}, record 1: its data's CRC-32C does not match "
        f"(the {length}-byte record is damaged) (pass --skip-bad to skip such episodes)"
    )
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name != "src"] == []


@pytest.mark.parametrize("where, skipped", [("data", [3]), ("length", [2, 3])])
def test_skip_bad_skips_the_damaged_episodes_and_notes_them(where, skipped, source, tmp_path):
    src, out = damaged(source, tmp_path, where), tmp_path / "x.zarr"
    hpt("import", "rlds", src, "--name", "toy", "--out", out, "--image-size", "32", "--skip-bad")
    data = Dataset(out)
    notes = {s["episode"]: s["reason"] for s in data.notes["skipped_episodes"]}
    assert sorted(notes) == skipped and all(f"shard {SHARD}" in r and "CRC-32C does not match" in r for r in notes.values())
    kept = [i for i in range(4) if i not in skipped]
    assert data.num_episodes == len(kept)
    for stored, episode in zip(range(data.num_episodes), kept):  # the others exactly as written
        np.testing.assert_allclose(data.episode(stored)["action"], episode_values(episode, STEPS, {"state": 8})["steps/action"], atol=1e-6)
