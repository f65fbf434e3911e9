"""The ``lerobot`` exporter: kit datasets written as LeRobot v3.0 (the layout LeRobot 0.4 writes),
checked field by field against that layout and imported back with the kit's own LeRobot importer:
vectors equal, H.264 frames within codec tolerance, PNG frames equal, instructions as tasks. The
datasets: a real simulator conversion (``hpt-kit convert mujoco-arm3-rgb``, exported through
``hpt-kit data export``) and the importer's v3.0 fixture (AV1 and PNG cameras, two tasks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hpt_kit.core.exporter import ExportError, ExportOptions
from hpt_kit.core.importer import Selection
from hpt_kit.data.exporting import export_dataset
from hpt_kit.data.importing import ImportOptions, import_dataset
from hpt_kit.data.store import Dataset

from hpt_kit_lerobot.export import LeRobotExporter
from hpt_kit_lerobot.importer import LeRobotImporter

writer = sys.modules["lerobot_fixtures"]  # loaded by conftest.py
HPT_KIT = str(Path(sys.executable).with_name("hpt-kit"))
EXPORTER, IMPORTER = LeRobotExporter(), LeRobotImporter()
FRONT = "observation.images.front"
MIN_PSNR_DB = 30.0  # H.264 at CRF 23, yuv420p: chroma at half resolution blurs thin coloured edges
MAX_MEAN_ERROR = 3.0  # mean absolute error per frame, in 0-255 levels
INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                  "task_index": "int64"}


def _hpt(*args: str, env: dict[str, str]) -> str:
    run = subprocess.run([HPT_KIT, *args], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    return run.stdout


@pytest.fixture(scope="module")
def arm(tmp_path_factory) -> dict[str, Path]:
    """``mujoco-arm3-rgb`` (2 episodes, 64x64 front camera) converted and exported through the real
    commands, and imported back with the kit's LeRobot importer."""
    root = tmp_path_factory.mktemp("arm")
    env = dict(os.environ, HPT_KIT_DATA=str(root / "data"))
    _hpt("convert", "mujoco-arm3-rgb", "--episodes", "2", env=env)
    dataset, export, back = root / "data/mujoco-arm3-rgb.zarr", root / "arm-lerobot", root / "back.zarr"
    out = _hpt("data", "export", str(dataset), str(export), "--format", "lerobot", "--json", env=env)
    assert json.loads(out.splitlines()[-1])["path"] == str(export)
    import_dataset(IMPORTER, str(export), back, ImportOptions(name="back"))
    return {"dataset": dataset, "export": export, "back": back}


def _frame_errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(lowest PSNR in dB, highest mean absolute error) over the frames of two (T, ...) uint8 arrays."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = np.square(diff).reshape(len(diff), -1).mean(axis=1)
    psnr = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))
    return float(psnr.min()), float(np.abs(diff).reshape(len(diff), -1).mean(axis=1).max())


@pytest.mark.slow
def test_a_simulator_dataset_comes_back_through_the_importer(arm):
    ds, back = Dataset(arm["dataset"]), Dataset(arm["back"])
    np.testing.assert_array_equal(back.episode_ends, ds.episode_ends)
    np.testing.assert_array_equal(back.load("state"), ds.load("state"))
    np.testing.assert_array_equal(back.load("action"), ds.load("action"))
    psnr, error = _frame_errors(back.load("image"), ds.load("image"))
    assert psnr >= MIN_PSNR_DB and error <= MAX_MEAN_ERROR, (psnr, error)
    assert back.spec.action.control_hz == ds.spec.action.control_hz == 20.0
    assert back.spec.observation.image.views == ds.spec.observation.image.views == ("front",)
    assert back.notes["instructions"] == [ds.spec.description]  # no instruction: the description is the task
    assert back.notes["import"]["robot"] == "mujoco-arm3-rgb"


@pytest.mark.slow
def test_the_layout_is_lerobot_v30_field_by_field(arm):
    ds, root = Dataset(arm["dataset"]), arm["export"]
    lengths = np.diff(np.concatenate([[0], ds.episode_ends]))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    total = int(lengths.sum())
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/info.json",
        "meta/stats.json", "meta/tasks.parquet", f"videos/{FRONT}/chunk-000/file-000.mp4",
    ]

    info = json.loads((root / "meta/info.json").read_text())
    assert list(info) == ["codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
                          "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits",
                          "data_path", "video_path", "features"]
    assert {k: v for k, v in info.items() if k != "features"} == {
        "codebase_version": "v3.0", "robot_type": "mujoco-arm3-rgb", "total_episodes": 2, "total_frames": total,
        "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
        "fps": 20, "splits": {"train": "0:2"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
    }
    features = info["features"]
    assert list(features) == ["observation.state", "action", FRONT, *INDEX_FEATURES]
    assert features["observation.state"] == {"dtype": "float32", "shape": [18], "names": None}
    assert features["action"] == {"dtype": "float32", "shape": [3], "names": None}
    assert features[FRONT] == {
        "dtype": "video", "shape": [64, 64, 3], "names": ["height", "width", "channels"],
        "info": {"video.height": 64, "video.width": 64, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                 "video.is_depth_map": False, "video.fps": 20, "video.channels": 3, "has_audio": False},
    }
    for key, dtype in INDEX_FEATURES.items():
        assert features[key] == {"dtype": dtype, "shape": [1], "names": None}

    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data.schema.names == ["observation.state", "action", *INDEX_FEATURES]
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 18)
    assert data.schema.field("action").type == pa.list_(pa.float32(), 3)
    assert data.schema.field("timestamp").type == pa.float32()
    assert all(data.schema.field(k).type == pa.int64() for k in list(INDEX_FEATURES)[1:])
    np.testing.assert_array_equal(np.stack(data.column("observation.state").to_numpy(zero_copy_only=False)), ds.load("state"))
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    np.testing.assert_array_equal(data.column("index").to_numpy(), np.arange(total))
    np.testing.assert_array_equal(data.column("frame_index").to_numpy(), frame_index)
    np.testing.assert_array_equal(data.column("episode_index").to_numpy(), np.repeat([0, 1], lengths))
    np.testing.assert_allclose(data.column("timestamp").to_numpy(), frame_index / 20, rtol=1e-6)
    assert set(data.column("task_index").to_pylist()) == {0}

    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    video = f"videos/{FRONT}"
    assert [n for n in episodes.schema.names if not n.startswith("stats/")] == [
        "episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
        "dataset_to_index", f"{video}/chunk_index", f"{video}/file_index", f"{video}/from_timestamp",
        f"{video}/to_timestamp", "meta/episodes/chunk_index", "meta/episodes/file_index",
    ]
    rows = episodes.to_pylist()
    for e, row in enumerate(rows):
        assert (row["episode_index"], row["length"], row["tasks"]) == (e, lengths[e], [ds.spec.description])
        assert (row["dataset_from_index"], row["dataset_to_index"]) == (starts[e], starts[e] + lengths[e])
        assert (row["data/chunk_index"], row["data/file_index"], row[f"{video}/chunk_index"], row[f"{video}/file_index"]) == (0, 0, 0, 0)
        assert row[f"{video}/from_timestamp"] == pytest.approx(starts[e] / 20)  # episodes back to back
        assert row[f"{video}/to_timestamp"] == pytest.approx((starts[e] + lengths[e]) / 20)
        state = ds.load("state")[starts[e]: starts[e] + lengths[e]]
        np.testing.assert_allclose(row["stats/observation.state/mean"], state.mean(0), rtol=1e-5, atol=1e-6)
        assert row["stats/observation.state/count"] == [lengths[e]]
        assert np.shape(row[f"stats/{FRONT}/mean"]) == (3, 1, 1)

    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == set(features)
    for key, s in stats.items():
        assert set(s) == {"min", "max", "mean", "std", "count"} and s["count"] == [total], key
    np.testing.assert_allclose(stats["action"]["min"], ds.load("action").min(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], ds.load("state").astype(np.float64).std(0), rtol=1e-4, atol=1e-6)
    channel_mean = ds.load("image").reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(np.ravel(stats[FRONT]["mean"]), channel_mean, rtol=1e-6)
    assert np.shape(stats[FRONT]["std"]) == (3, 1, 1) and stats["index"]["max"] == [total - 1]

    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.to_pylist() == [{"task_index": 0, "__index_level_0__": ds.spec.description}]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]

    with av.open(str(root / video / "chunk-000/file-000.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height, stream.average_rate) == ("h264", 64, 64, 20)
        times = [float(f.pts * f.time_base) for f in container.decode(stream)]
    np.testing.assert_allclose(times, np.arange(total) / 20, atol=1e-6)


def test_images_mode_is_lossless(tmp_path, v3_h264):
    """Cameras as PNG images in the rows (LeRobot's ``image`` dtype): the frames come back equal."""
    kit = import_dataset(IMPORTER, str(v3_h264), tmp_path / "kit.zarr", ImportOptions(name="fixture"))
    out = export_dataset(EXPORTER, kit, tmp_path / "images", ExportOptions(cameras="images"))
    info = json.loads((out / "meta/info.json").read_text())
    assert info["video_path"] is None and info["features"][FRONT]["dtype"] == "image"
    assert not (out / "videos").exists()
    back = import_dataset(IMPORTER, str(out), tmp_path / "back.zarr", ImportOptions(name="back"))
    np.testing.assert_array_equal(Dataset(back).load("image"), Dataset(kit).load("image"))
    np.testing.assert_array_equal(Dataset(back).load("state"), Dataset(kit).load("state"))


def test_the_importer_fixture_comes_back_with_tasks_and_cameras(tmp_path, v3):
    """The v3.0 fixture (AV1 cameras, one at twice the rate, one as PNG; two tasks) imported into the
    kit, exported, and read again by the importer: the export holds what the kit dataset holds."""
    kit = Dataset(import_dataset(IMPORTER, str(v3), tmp_path / "kit.zarr", ImportOptions(name="fixture")))
    out = export_dataset(EXPORTER, kit.path, tmp_path / "export")
    views = tuple(f"observation.images.{v}" for v in kit.spec.observation.image.views)
    assert views == (FRONT, "observation.images.wrist", "observation.images.top")
    info = IMPORTER.describe(out)
    assert info.tasks == writer.TASKS and info.episodes == 4 and info.fps == 10.0
    names = tuple(getattr(kit.spec.observation, "state_names", ()))
    assert json.loads((out / "meta/info.json").read_text())["features"]["observation.state"]["names"] == (list(names) or None)
    episodes = list(IMPORTER.episodes(out, Selection(("observation.state",), "action", views)))
    image = kit.load("image")
    for ep, start, end in zip(episodes, kit.episode_starts, kit.episode_ends):
        assert ep.problem is None
        assert ep.instruction == writer.TASKS[ep.index % len(writer.TASKS)]
        np.testing.assert_array_equal(ep.arrays["observation.state"], kit.load("state")[start:end])
        np.testing.assert_array_equal(ep.arrays["action"], kit.load("action")[start:end])
        for v, key in enumerate(views):
            psnr, error = _frame_errors(ep.arrays[key], image[start:end, v])
            assert psnr >= MIN_PSNR_DB and error <= MAX_MEAN_ERROR, (key, psnr, error)


def test_refusals_are_one_line(tmp_path, v3_h264):
    kit = import_dataset(IMPORTER, str(v3_h264), tmp_path / "kit.zarr", ImportOptions(name="fixture", image_size=33))
    with pytest.raises(ExportError, match=r"frames are 33x33; H.264 in yuv420p needs an even height and width \(export with --cameras images"):
        export_dataset(EXPORTER, kit, tmp_path / "odd")
    assert not (tmp_path / "odd").exists() and not list(tmp_path.glob(".odd.tmp-*"))  # nothing left behind
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="taken already exists; pass --overwrite"):
        export_dataset(EXPORTER, kit, tmp_path / "taken")
    with pytest.raises(ExportError, match="cannot go into the dataset it reads"):
        export_dataset(EXPORTER, kit, kit / "inside", overwrite=True)


@pytest.mark.slow
def test_the_command_refuses_in_one_line(arm, tmp_path):
    """``hpt-kit data export`` onto an existing folder: one line, exit 1 (the registry's own test
    covers an unknown format's message)."""
    (tmp_path / "taken").mkdir()
    run = subprocess.run([HPT_KIT, "data", "export", str(arm["dataset"]), str(tmp_path / "taken")],
                         capture_output=True, text=True, timeout=300)
    message = f"error: {tmp_path / 'taken'} already exists; pass --overwrite to replace it"
    assert (run.returncode, run.stderr.strip().splitlines()[-1]) == (1, message), run.stderr


def test_registered_through_the_entry_point():
    from hpt_kit.core.registry import load_registry

    registry = load_registry(embodiments=False)
    assert isinstance(registry.exporter("lerobot"), LeRobotExporter)


def test_files_roll_over_as_lerobot_counts_them(tmp_path, v3_h264, monkeypatch):
    """With tiny file sizes every episode gets its own data file and mp4 (chunk-000/file-000, -001,
    ...), and the importer still finds each episode's rows and frames."""
    import hpt_kit_lerobot.export as export

    monkeypatch.setattr(export, "DATA_FILES_SIZE_IN_MB", 1e-6)
    monkeypatch.setattr(export, "VIDEO_FILES_SIZE_IN_MB", 1e-6)
    kit = Dataset(import_dataset(IMPORTER, str(v3_h264), tmp_path / "kit.zarr", ImportOptions(name="fixture")))
    out = export_dataset(EXPORTER, kit.path, tmp_path / "export")
    assert sorted(p.name for p in (out / "data/chunk-000").iterdir()) == [f"file-{i:03d}.parquet" for i in range(3)]
    assert sorted(p.name for p in (out / f"videos/{FRONT}/chunk-000").iterdir()) == [f"file-{i:03d}.mp4" for i in range(3)]
    rows = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(r["data/file_index"], r[f"videos/{FRONT}/file_index"], r[f"videos/{FRONT}/from_timestamp"]) for r in rows] == [
        (0, 0, 0.0), (1, 1, 0.0), (2, 2, 0.0)]
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 13), (13, 26), (26, 39)]
    episodes = list(IMPORTER.episodes(out, Selection(("observation.state",), "action", (FRONT,))))
    assert [ep.problem for ep in episodes] == [None] * 3
    np.testing.assert_array_equal(np.concatenate([ep.arrays["observation.state"] for ep in episodes]), kit.load("state"))
    psnr, error = _frame_errors(np.concatenate([ep.arrays[FRONT] for ep in episodes]), kit.load("image")[:, 0])
    assert psnr >= MIN_PSNR_DB and error <= MAX_MEAN_ERROR, (psnr, error)


def test_a_dataset_without_state_exports_without_an_observation_state(tmp_path):
    """A state-free spec (``state_dim == 0``, e.g. an Open-X dataset with no proprioception): the
    export has no ``observation.state`` feature, column or statistics; the action and cameras are whole."""
    from hpt_kit.core.spec import ActionSpec, EmbodimentData, ImageSpec, ObservationSpec, StemSpec
    from hpt_kit.data.store import write_dataset

    spec = EmbodimentData(
        name="no-state", observation=ObservationSpec(0, image=ImageSpec(("front",), 16, 16)),
        action=ActionSpec(2, (-1.0, -1.0), (1.0, 1.0), 10.0), stems=(StemSpec("image", kind="resnet"),),
    )
    rng = np.random.default_rng(0)
    episodes = [{"state": np.zeros((5, 0), np.float32), "action": rng.uniform(-1, 1, (5, 2)).astype(np.float32),
                 "image": rng.integers(0, 256, (5, 1, 16, 16, 3), dtype=np.uint8)} for _ in range(2)]
    kit = write_dataset(tmp_path / "kit.zarr", spec, episodes)
    out = export_dataset(EXPORTER, kit, tmp_path / "out", ExportOptions(cameras="images"))
    info = json.loads((out / "meta/info.json").read_text())
    assert "observation.state" not in info["features"] and info["features"]["action"]["shape"] == [2]
    table = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert "observation.state" not in table.column_names and table.num_rows == 10
    np.testing.assert_allclose(np.stack(table.column("action").to_pylist()), np.concatenate([e["action"] for e in episodes]))
    stats = json.loads((out / "meta/stats.json").read_text())
    assert "observation.state" not in stats and "action" in stats
