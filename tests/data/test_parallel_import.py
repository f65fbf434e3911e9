"""``hpt-kit import --workers``: ranges of a source's episodes imported in local worker processes, one
shard each; the dataset equals the serial import's (same episodes, order, values, statistics, spec
and notes, ``--skip-bad`` notes of every worker merged) for LeRobot (H.264 video), RLDS and
robomimic; a bad episode without ``--skip-bad`` stops the import naming it and keeps the finished
shards for ``--resume``."""

from __future__ import annotations

import pytest

from hpt_kit.core.registry import load_registry
from hpt_kit.data.fanout import import_sharded, parts_folder
from hpt_kit.data.importing import ImportOptions, import_dataset
from hpt_kit.data.store import Dataset, DatasetError
from hpt_kit.engine import UnitError
from tests.cli.test_import_end_to_end import _fixture_writer
from tests.data.test_shards import assert_same_dataset


@pytest.fixture(scope="module")
def registry():
    return load_registry(embodiments=False)


def _sources(tmp_path):
    write_lerobot = _fixture_writer("plugins/lerobot/tests/lerobot_fixtures.py", "write_lerobot")
    make_ragged = _fixture_writer("plugins/lerobot/tests/lerobot_fixtures.py", "make_ragged")
    write_rlds = _fixture_writer("plugins/rlds/tests/rlds_fixtures.py", "write_rlds")
    write_robomimic = _fixture_writer("plugins/robomimic/tests/fixtures.py", "write_robomimic")
    lerobot = write_lerobot(tmp_path / "lr", episodes=5, steps=6, frame_size=(16, 16), cameras=("front",))
    make_ragged(lerobot, 3)
    return {
        "lerobot": (lerobot, {"skip_bad": True}, 2),
        "rlds": (write_rlds(tmp_path / "rl", episodes=5, steps=6, frame_size=(16, 16), cameras=("image",), shards=2),
                 {}, 2),
        # filter_key=train holds 5 of the 6 demos: the last unit's range is past its end (an empty unit)
        "robomimic": (write_robomimic(tmp_path / "rm.hdf5", episodes=6, steps=5, frame_size=(16, 16)),
                      {"options": {"filter_key": "train"}}, 1),
    }


@pytest.mark.parametrize("fmt", ["lerobot", "rlds", "robomimic"])
def test_parallel_import_equals_the_serial_one(tmp_path, registry, fmt):
    source, extra, unit = _sources(tmp_path)[fmt]
    opts = ImportOptions(name=f"from-{fmt}", **extra)
    importer = registry.importer(fmt)
    serial = Dataset(import_dataset(importer, str(source), tmp_path / "serial.zarr", opts, registry))
    seen = []
    out = import_sharded(fmt, str(source), tmp_path / "sharded.zarr", opts, workers=2, unit_episodes=unit,
                         on_progress=seen.append, registry=registry)
    sharded = Dataset(out)
    assert len(sharded.shards) >= 2 and seen[-1].units_done == seen[-1].units
    assert_same_dataset(serial, sharded)
    assert sharded.notes == serial.notes
    if fmt == "lerobot":
        assert [s["episode"] for s in sharded.notes["skipped_episodes"]] == [3]
    assert not parts_folder(out).exists()


def test_a_bad_episode_stops_the_import_naming_it_and_resume_does_the_rest(tmp_path, registry):
    source, _, _ = _sources(tmp_path)["lerobot"]
    out = tmp_path / "lr.zarr"
    opts = ImportOptions(name="lr")
    with pytest.raises(UnitError, match=r"unit 3 \(episodes 3\.\.3\): .*episode 3.*observation\.state.*--skip-bad") as error:
        import_sharded("lerobot", str(source), out, opts, unit_episodes=1, registry=registry)
    assert "--resume" in str(error.value) and not out.exists()
    parts = parts_folder(out)
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("shard-*.zarr")}
    assert sorted(kept) == ["shard-00000.zarr", "shard-00001.zarr", "shard-00002.zarr"]  # units run in order here

    write_lerobot = _fixture_writer("plugins/lerobot/tests/lerobot_fixtures.py", "write_lerobot")
    write_lerobot(tmp_path / "lr", episodes=5, steps=6, frame_size=(16, 16), cameras=("front",))  # the source repaired
    import_sharded("lerobot", str(source), out, opts, unit_episodes=1, registry=registry, resume=True)
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # finished units were not redone
    serial = import_dataset(registry.importer("lerobot"), str(source), tmp_path / "serial.zarr", opts, registry)
    assert_same_dataset(Dataset(serial), Dataset(out))


def test_the_import_command_fans_out_and_reports_a_bad_episode_in_one_line(tmp_path):
    import json

    from tests.cli.test_end_to_end import hpt

    sources = _sources(tmp_path)
    done = hpt("import", "rlds", sources["rlds"][0], "--name", "rl", "--out", tmp_path / "rl.zarr", "--workers", 2,
               "--unit-episodes", 2, "--json")
    assert json.loads(done.stdout)["episodes"] == 5 and "units 3/3, episodes 5/5" in done.stderr
    assert len(Dataset(tmp_path / "rl.zarr").shards) == 3
    bad = hpt("import", "lerobot", sources["lerobot"][0], "--out", tmp_path / "lr.zarr", "--workers", 2,
              "--unit-episodes", 2, check=False)
    lines = [line for line in bad.stderr.splitlines() if line.startswith("error")]
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(lines) == 1, bad.stderr
    assert "unit 1 (episodes 2..3)" in lines[0] and "episode 3" in lines[0] and "observation.state" in lines[0]
    assert "--resume" in lines[0] and not (tmp_path / "lr.zarr").exists()


def test_a_unit_whose_every_episode_is_skipped_writes_no_shard_and_keeps_its_notes(tmp_path, registry):
    """Episodes 2 and 3 bad, units of 2 episodes: the middle unit skips all it reads. The dataset is
    the serial import's, its skipped episodes listed in order; with every episode bad, one error."""
    write_lerobot = _fixture_writer("plugins/lerobot/tests/lerobot_fixtures.py", "write_lerobot")
    make_ragged = _fixture_writer("plugins/lerobot/tests/lerobot_fixtures.py", "make_ragged")
    source = write_lerobot(tmp_path / "lr", episodes=5, steps=6, frame_size=(16, 16), cameras=("front",))
    make_ragged(source, 2)
    make_ragged(source, 3)
    opts = ImportOptions(name="lr", skip_bad=True)
    serial = Dataset(import_dataset(registry.importer("lerobot"), str(source), tmp_path / "serial.zarr", opts, registry))
    out = import_sharded("lerobot", str(source), tmp_path / "sharded.zarr", opts, unit_episodes=2, registry=registry)
    sharded = Dataset(out)
    assert [s.num_episodes for s in sharded.shards] == [2, 1] and sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "shard-00000.zarr", "shard-00002.zarr"]
    assert [s["episode"] for s in sharded.notes["skipped_episodes"]] == [2, 3]
    assert sharded.notes == serial.notes
    assert_same_dataset(serial, sharded)

    few = write_lerobot(tmp_path / "bad", episodes=2, steps=6, frame_size=(16, 16), cameras=("front",))
    make_ragged(few, 0)
    make_ragged(few, 1)
    with pytest.raises(DatasetError, match=r"--skip-bad skipped every episode \(2\); the first, episode 0: .*observation\.state"):
        import_sharded("lerobot", str(few), tmp_path / "none.zarr", opts, unit_episodes=1, registry=registry)
    assert not (tmp_path / "none.zarr").exists() and not parts_folder(tmp_path / "none.zarr").exists()
