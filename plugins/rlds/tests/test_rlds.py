"""The rlds importer on TFDS-layout fixtures: detect, describe from metadata, episodes (values, frames,
instruction, split, short keys), the per-episode problems and the whole-source errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hpt_kit.core.importer import IMAGE, TEXT, VECTOR, ImportSourceError, Selection
from rlds_fixtures import FRAME, STEPS, episode_values, frame, instruction_for, write_rlds

from hpt_kit_rlds import RldsImporter, decode

STATE = "steps/observation/state"
ACTION = "steps/action"
VIEWS = ("steps/observation/image", "steps/observation/wrist_image")
IMPORTER = RldsImporter()


def select(state=(STATE,), action=ACTION, views=VIEWS, **kw) -> Selection:
    return Selection(tuple(state), action, tuple(views), **kw)


def read(path: Path, selection: Selection) -> list:
    return list(IMPORTER.episodes(path, selection))


def test_registered_through_the_entry_point():
    from hpt_kit.core.registry import load_registry

    registry = load_registry(embodiments=False)
    assert registry.importers["rlds"].importer.name == "rlds"


def test_detect(rlds_source, tmp_path):
    assert IMPORTER.detect(rlds_source)
    assert IMPORTER.detect(rlds_source.parent)  # the dataset folder: its newest version is used
    assert IMPORTER.detect(rlds_source / "dataset_info.json")
    assert not IMPORTER.detect(tmp_path)
    (tmp_path / "dataset_info.json").write_text("{}")
    (tmp_path / "features.json").write_text(
        json.dumps({"featuresDict": {"features": {"image": {"image": {}}}}})
    )
    assert not IMPORTER.detect(tmp_path)  # TFDS, but no steps: not RLDS


def test_describe_reads_metadata_only(rlds_source, monkeypatch):
    def no_frames(*args, **kwargs):
        raise AssertionError("describe decoded a frame")

    monkeypatch.setattr(decode, "frames", no_frames)
    info = IMPORTER.describe(rlds_source)
    assert info.format == "rlds" and info.episodes == 4 and info.steps == 0 and info.fps == 0
    kinds = {f.key: (f.kind, f.shape, f.dtype) for f in info.features}
    assert kinds[STATE] == (VECTOR, (8,), "float32")
    assert kinds["steps/observation/joint_velocity"] == (VECTOR, (3,), "float64")
    assert kinds[ACTION] == (VECTOR, (7,), "float32")
    assert kinds["steps/is_first"] == (VECTOR, (1,), "bool")
    assert kinds["steps/observation/image"] == (IMAGE, (*FRAME, 3), "jpeg")
    assert kinds["steps/observation/wrist_image"] == (IMAGE, (*FRAME, 3), "png")
    assert kinds["steps/language_instruction"] == (TEXT, (), "string")
    assert "episode_metadata/file_path" not in kinds
    assert info.default_state == (STATE,) and info.default_action == ACTION and info.default_views == VIEWS
    assert info.tasks == (instruction_for(0),)
    assert info.extra["splits"] == {"train": 4, "val": 1} and info.extra["shards"] == 2
    assert info.extra["tfds_name"] == "toy_rlds" and info.extra["version"] == "1.0.0"
    assert info.extra["episode_metadata"] == ["episode_metadata/file_path"]


def test_default_state_without_a_state_key(tmp_path):
    folder = write_rlds(
        tmp_path, episodes=1, steps=3, cameras=("image",), shards=1, state_dims={"joint_pos": 7, "gripper": 1}
    )
    info = IMPORTER.describe(folder)
    assert info.default_state == (
        "steps/observation/gripper",
        "steps/observation/joint_pos",
        "steps/observation/joint_velocity",
    )  # sorted numeric observations; language_embedding is not an observation and not taken


def test_schema_variants(tmp_path):
    """Unknown image sizes (-1) come from the first frame's header; a uint16 depth image and a
    (H, W, 1) float tensor are described but neither a default view nor default state; a nested
    sequence is listed as unsupported and refused by name."""
    folder = write_rlds(
        tmp_path, episodes=1, steps=3, cameras=("image",), shards=1, state_dims={"joint_pos": 7}
    )
    doc = json.loads((folder / "features.json").read_text())
    step = doc["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    obs = step["observation"]["featuresDict"]["features"]
    obs["image"]["image"]["shape"]["dimensions"] = ["-1", "-1", "3"]
    obs["depth"] = {
        "image": {"shape": {"dimensions": ["48", "64", "1"]}, "dtype": "uint16", "encodingFormat": "png"}
    }
    obs["range"] = {
        "tensor": {"shape": {"dimensions": ["48", "64", "1"]}, "dtype": "float32", "encoding": "none"}
    }
    step["objects"] = {"sequence": {"feature": {"tensor": {"shape": {}, "dtype": "int64"}}, "length": "-1"}}
    (folder / "features.json").write_text(json.dumps(doc))
    info = IMPORTER.describe(folder)
    shapes = {f.key: (f.shape, f.dtype) for f in info.features}
    assert shapes["steps/observation/image"] == ((*FRAME, 3), "jpeg")
    assert shapes["steps/observation/depth"] == ((48, 64, 1), "png/uint16")
    assert info.default_views == ("steps/observation/image",)
    assert info.default_state == ("steps/observation/joint_pos", "steps/observation/joint_velocity")
    assert "steps/objects" not in shapes and "ragged" in info.extra["unsupported"]["steps/objects"]
    with pytest.raises(
        ImportSourceError, match=r"'steps/observation/depth' cannot be a camera view: uint16 pixels"
    ):
        IMPORTER.episodes(
            folder, select(state=("steps/observation/joint_pos",), views=("steps/observation/depth",))
        )
    with pytest.raises(
        ImportSourceError, match=r"'steps/objects' \(state or action key\) cannot be imported: a sequence"
    ):
        IMPORTER.episodes(folder, select(state=("steps/objects",), views=()))


def test_episodes_values_frames_and_instruction(rlds_source):
    episodes = read(rlds_source, select())
    assert [ep.index for ep in episodes] == [0, 1, 2, 3] and not any(ep.problem for ep in episodes)
    for ep in episodes:
        expected = episode_values(ep.index, STEPS, {"state": 8})
        assert set(ep.arrays) == {STATE, ACTION, *VIEWS}
        np.testing.assert_array_equal(ep.arrays[STATE], expected[STATE])
        np.testing.assert_array_equal(ep.arrays[ACTION], expected[ACTION])
        assert ep.arrays[STATE].dtype == np.float32 and ep.arrays[ACTION].shape == (STEPS, 7)
        jpeg, png = (ep.arrays[v] for v in VIEWS)
        assert jpeg.shape == png.shape == (STEPS, *FRAME, 3) and jpeg.dtype == png.dtype == np.uint8
        truth = [np.stack([frame(ep.index, t, cam, FRAME) for t in range(STEPS)]) for cam in (0, 1)]
        np.testing.assert_array_equal(png, truth[1])  # PNG is lossless
        assert np.abs(jpeg.astype(int) - truth[0]).mean() < 3  # JPEG at quality 95
        assert ep.instruction == instruction_for(ep.index)


def test_float64_vector_and_scalar_keys(rlds_source):
    sel = select(
        state=("steps/observation/joint_velocity", "steps/is_first"), action="steps/reward", views=()
    )
    ep = read(rlds_source, sel)[0]
    expected = episode_values(0, STEPS, {"state": 8})["steps/observation/joint_velocity"]
    np.testing.assert_allclose(
        ep.arrays["steps/observation/joint_velocity"], expected, rtol=1e-6
    )  # float_list: float32
    np.testing.assert_array_equal(ep.arrays["steps/is_first"][:, 0], [1, 0, 0, 0, 0, 0])
    assert ep.arrays["steps/reward"].shape == (STEPS, 1)


def test_image_size_and_short_keys(rlds_source):
    sel = select(
        state=("observation/state",), action="action", views=("observation/image", "observation/wrist_image")
    )
    episodes = read(rlds_source, Selection(sel.state, sel.action, sel.views, episodes=2, image_size=(24, 40)))
    assert len(episodes) == 2
    for ep in episodes:
        assert set(ep.arrays) == {
            "observation/state",
            "action",
            "observation/image",
            "observation/wrist_image",
        }
        assert ep.arrays["observation/image"].shape == (STEPS, 24, 40, 3)
        assert ep.arrays["observation/wrist_image"].shape == (STEPS, 24, 40, 3)


def test_split_option(rlds_source):
    (ep,) = read(rlds_source, select(views=(), options={"split": "val"}))
    assert ep.index == 0 and ep.instruction == instruction_for(4)
    np.testing.assert_array_equal(ep.arrays[ACTION], episode_values(4, STEPS, {"state": 8})[ACTION])
    with pytest.raises(ImportSourceError, match=r"no split 'test'; the splits it has: train, val"):
        IMPORTER.episodes(rlds_source, select(options={"split": "test"}))


def test_source_errors(rlds_source):
    with pytest.raises(
        ImportSourceError, match=r"unknown option\(s\) filter_key; the rlds options are split"
    ):
        IMPORTER.episodes(rlds_source, select(options={"filter_key": "x"}))
    with pytest.raises(
        ImportSourceError,
        match=r"no step key 'steps/observation/eef'.*the keys it has: .*steps/observation/state",
    ):
        IMPORTER.episodes(rlds_source, select(state=("steps/observation/eef",)))
    with pytest.raises(
        ImportSourceError, match=r"'steps/language_instruction' holds text data \(dtype string\)"
    ):
        IMPORTER.episodes(rlds_source, select(state=("steps/language_instruction",)))
    with pytest.raises(ImportSourceError, match=r"'steps/action' cannot be a camera view"):
        IMPORTER.episodes(rlds_source, select(views=(ACTION,)))
    with pytest.raises(ImportSourceError, match=r"no dataset_info.json"):
        IMPORTER.describe(rlds_source / "nowhere")


def test_bad_episodes_are_problems_not_errors(bad_source):
    episodes = {ep.index: ep for ep in read(bad_source, select())}
    assert sorted(episodes) == [0, 1, 2, 3, 4, 5]
    assert episodes[0].problem is None and episodes[5].problem is None
    inf = episodes[1]  # read as stored: the kit's validation names the non-finite value
    assert inf.problem is None and np.isinf(inf.arrays[ACTION][STEPS // 2, 0])
    assert "has no steps" in episodes[2].problem
    assert "'steps/observation/state': 47 values for 6 steps of 8 (ragged" in episodes[3].problem
    assert "'steps/observation/image', step 3: cannot decode the image" in episodes[4].problem
    assert all("toy_rlds-train.tfrecord-0000" in episodes[i].problem for i in (2, 3, 4))


def test_missing_and_truncated_shards(rlds_source, tmp_path):
    copy = Path(shutil.copytree(rlds_source, tmp_path / "1.0.0"))
    second = copy / "toy_rlds-train.tfrecord-00001-of-00002"
    second.write_bytes(second.read_bytes()[:-100])
    episodes = read(copy, select(views=()))
    assert [ep.problem is None for ep in episodes] == [True, True, True, False]
    assert "truncated at record 1" in episodes[3].problem
    second.unlink()
    episodes = read(copy, select(views=()))
    assert [ep.index for ep in episodes] == [0, 1, 2, 3]
    assert all("shard toy_rlds-train.tfrecord-00001-of-00002 is missing" in ep.problem for ep in episodes[2:])
    (copy / "toy_rlds-train.tfrecord-00000-of-00002").unlink()
    with pytest.raises(ImportSourceError, match=r"no shard of split 'train'"):
        IMPORTER.episodes(copy, select())


def test_older_dataset_info_without_template_or_shard_lengths(rlds_source, tmp_path):
    copy = Path(shutil.copytree(rlds_source, tmp_path / "1.0.0"))
    info = json.loads((copy / "dataset_info.json").read_text())
    for split in info["splits"]:
        del split["filepathTemplate"]
    (copy / "dataset_info.json").write_text(json.dumps(info))
    assert len(read(copy, select(views=()))) == 4  # TFDS's default file name template
    for split in info["splits"]:
        del split["shardLengths"]
        split["statistics"] = {"numExamples": "4"}
    (copy / "dataset_info.json").write_text(json.dumps(info))
    assert IMPORTER.describe(copy).episodes == 4
    assert len(read(copy, select(views=()))) == 4  # the shards found by name


@pytest.mark.slow
def test_hpt_kit_import_end_to_end(bad_source, tmp_path):
    """The real command on the bad source with --skip-bad: the four bad episodes (inf, empty, ragged,
    undecodable frame) are skipped, the two good ones imported with frames scaled to 32 x 32."""
    from hpt_kit.data.store import Dataset

    hpt_kit = str(Path(sys.executable).with_name("hpt-kit"))
    out = tmp_path / "x.zarr"
    cmd = [
        hpt_kit,
        "import",
        "rlds",
        str(bad_source),
        "--name",
        "toy-rlds",
        "--out",
        str(out),
        "--image-size",
        "32",
        "--skip-bad",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = Dataset(out)
    assert data.num_episodes == 2
    assert data.spec.observation.state_dim == 8 and data.spec.action.dim == 7
    episodes = [data.episode(i) for i in range(data.num_episodes)]
    for ep in episodes:
        assert ep["state"].shape == (STEPS, 8) and ep["action"].shape == (STEPS, 7)
        assert ep["image"].shape == (STEPS, 2, 32, 32, 3) and ep["image"].dtype == np.uint8
        assert np.isfinite(ep["state"]).all() and np.isfinite(ep["action"]).all()
    np.testing.assert_allclose(
        episodes[1]["action"], episode_values(5, STEPS, {"state": 8})[ACTION], atol=1e-6
    )
    skipped = {s["episode"]: s["reason"] for s in data.notes["skipped_episodes"]}
    assert sorted(skipped) == [1, 2, 3, 4] and "non-finite" in skipped[1]


def test_crc32c_known_vector_and_the_frames_tfrecord_writes(rlds_source):
    """CRC-32C of "123456789" is 0xE3069283 (RFC 3720, B.4); every frame the tfrecord writer wrote
    passes both masked checks, and the records read are the bytes the unchecked reader returns."""
    from crc32c import crc32c
    from tfrecord.reader import tfrecord_iterator

    from hpt_kit_rlds.records import masked_crc, read_frames

    assert crc32c(b"123456789") == 0xE3069283
    crc = 0xE3069283
    assert masked_crc(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    for shard in sorted(rlds_source.glob("*.tfrecord-*")):
        frames = list(read_frames(shard))
        assert all(f.problem == "" for f in frames) and [f.index for f in frames] == list(range(len(frames)))
        assert [bytes(f.data) for f in frames] == [bytes(r) for r in tfrecord_iterator(str(shard))]


def test_a_damaged_record_is_a_problem_naming_shard_and_record(rlds_source, tmp_path):
    copy = Path(shutil.copytree(rlds_source, tmp_path / "1.0.0"))
    shard = copy / "toy_rlds-train.tfrecord-00000-of-00002"
    raw = bytearray(shard.read_bytes())
    raw[40] ^= 0x10  # inside record 0's data
    shard.write_bytes(bytes(raw))
    episodes = read(copy, select(views=()))
    assert [ep.problem is None for ep in episodes] == [False, True, True, True]
    assert "shard toy_rlds-train.tfrecord-00000-of-00002, record 0: its data's CRC-32C does not match" in episodes[0].problem


def _same(a, b) -> bool:
    return (a.index, a.problem, a.instruction, sorted(a.arrays)) == (b.index, b.problem, b.instruction, sorted(b.arrays)) and all(
        np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays
    )


def test_a_range_decodes_only_its_own_episodes(bad_source, rlds_source, tmp_path, monkeypatch):
    """Every range (a parallel import's unit) gives the whole read's episodes in it, and parses no
    record outside it: the records before it in its shard are passed over by their lengths."""
    from hpt_kit_rlds.records import read_frames

    whole = read(bad_source, select())
    parsed = []
    original = decode.parse_example
    monkeypatch.setattr(decode, "parse_example", lambda record: parsed.append(bytes(record[:0])) or original(record))
    for first in range(6):
        for count in (1, 2):
            parsed.clear()
            part = read(bad_source, select(first=first, episodes=count))
            assert [ep.index for ep in part] == list(range(first, min(first + count, 6)))
            assert all(_same(a, b) for a, b in zip(part, whole[first : first + count]))
            assert len(parsed) == len(part)  # one parse per episode of the range, none before it
    shard = sorted(rlds_source.glob("*-train.tfrecord-*"))[0]
    frames = list(read_frames(shard))
    assert [(f.index, bytes(f.data)) for f in read_frames(shard, start=1)] == [(f.index, bytes(f.data)) for f in frames[1:]]
    (end,) = read_frames(shard, start=len(frames) + 2)
    assert (end.index, end.last, end.problem) == (len(frames), True, "")

    copy = Path(shutil.copytree(rlds_source, tmp_path / "1.0.0"))  # a damaged shard: the same problems either way
    second = copy / "toy_rlds-train.tfrecord-00001-of-00002"
    second.write_bytes(second.read_bytes()[:-100])
    first_shard = copy / "toy_rlds-train.tfrecord-00000-of-00002"
    raw = bytearray(first_shard.read_bytes())
    raw[0] ^= 0x01  # record 0's length: nothing in the shard can be read
    first_shard.write_bytes(bytes(raw))
    whole = read(copy, select(views=()))
    assert [ep.problem is None for ep in whole] == [False, False, True, False]
    for first in range(4):
        part = read(copy, select(views=(), first=first, episodes=1))
        assert len(part) == 1 and _same(part[0], whole[first])
