"""Writes RLDS datasets laid out as TFDS writes them, for the tests and for throughput runs.

A TFDS version folder ``<root>/<name>/<version>/`` with ``dataset_info.json`` and ``features.json``
in the JSON forms TFDS writes (``DatasetInfo`` and ``FeatureConnector.to_json``), and the shards
``<name>-<split>.tfrecord-NNNNN-of-NNNNN``: one ``tf.train.Example`` per episode, written with the
``tfrecord`` package's writer, with the per-step features flattened under ``steps/`` and every
step's values in one list, as TFDS's example serializer does (bools as int64, float64 as floats,
one encoded JPEG or PNG file per step for an Image feature).

    python plugins/rlds/tests/rlds_fixtures.py OUT --episodes 2000 --steps 100 --size 256 256
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tfrecord.writer import TFRecordWriter

TFDS = "tensorflow_datasets.core.features"
STEPS = 6  # the tests' episode length and frame size (small: the whole folder runs in seconds)
FRAME = (48, 64)
ACTION_DIM = 7
VELOCITY_DIM = 3  # steps/observation/joint_velocity, declared float64 like DROID's observations
BAD_KINDS = ("inf_action", "empty", "ragged_state", "bad_frame")


def tensor(shape: Sequence[int], dtype: str = "float32", doc: str = "") -> dict:
    cls = "scalar.Scalar" if not shape else "tensor_feature.Tensor"
    dims = {"dimensions": [str(d) for d in shape]} if shape else {}
    return {
        "pythonClassName": f"{TFDS}.{cls}",
        "tensor": {"shape": dims, "dtype": dtype, "encoding": "none"},
        "description": doc,
    }


def image(shape: Sequence[int], fmt: str, doc: str = "") -> dict:
    return {
        "pythonClassName": f"{TFDS}.image_feature.Image",
        "image": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": "uint8", "encodingFormat": fmt},
        "description": doc,
    }


def text(doc: str = "") -> dict:
    return {"pythonClassName": f"{TFDS}.text_feature.Text", "text": {}, "description": doc}


def features_dict(children: Mapping[str, dict]) -> dict:
    return {
        "pythonClassName": f"{TFDS}.features_dict.FeaturesDict",
        "featuresDict": {"features": dict(children)},
    }


def camera_format(index: int) -> str:
    """Cameras alternate JPEG and PNG, so both decoders are exercised."""
    return "jpeg" if index % 2 == 0 else "png"


def features_json(frame_size: tuple[int, int], cameras: Sequence[str], state_dims: Mapping[str, int]) -> dict:
    height, width = frame_size
    observation = {
        cam: image((height, width, 3), camera_format(i), f"camera {cam}") for i, cam in enumerate(cameras)
    }
    observation |= {key: tensor((dim,), "float32", f"robot {key}") for key, dim in state_dims.items()}
    observation["joint_velocity"] = tensor((VELOCITY_DIM,), "float64", "joint velocities")
    step = {
        "observation": features_dict(observation),
        "action": tensor((ACTION_DIM,), "float32", "end-effector delta and gripper"),
        "reward": tensor((), "float32", "reward"),
        "discount": tensor((), "float32", "discount"),
        "is_first": tensor((), "bool", "first step"),
        "is_last": tensor((), "bool", "last step"),
        "is_terminal": tensor((), "bool", "terminal step"),
        "language_instruction": text("the task"),
        "language_embedding": tensor((4,), "float32", "an instruction embedding"),
    }
    steps = {
        "pythonClassName": f"{TFDS}.dataset_feature.Dataset",
        "sequence": {"feature": features_dict(step), "length": "-1"},
    }
    metadata = features_dict({"file_path": text("where the episode was recorded")})
    return features_dict({"steps": steps, "episode_metadata": metadata})


def instruction_for(episode: int) -> str:
    return ("pick up the red block", "open the drawer", "push the button")[episode % 3]


def episode_values(episode: int, steps: int, state_dims: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The vectors of one episode, (T, D) each, a smooth function of the step and episode."""
    t = np.arange(steps, dtype=np.float64)[:, None]
    out = {
        f"steps/observation/{key}": np.sin(0.1 * t + np.arange(dim) + episode).astype(np.float32)
        for key, dim in state_dims.items()
    }
    out["steps/observation/joint_velocity"] = np.cos(0.2 * t + np.arange(VELOCITY_DIM) * 0.5 + episode)
    out["steps/action"] = np.tanh(0.05 * t - np.arange(ACTION_DIM) * 0.1 + 0.01 * episode).astype(np.float32)
    return out


def frame(episode: int, step: int, camera: int, frame_size: tuple[int, int]) -> np.ndarray:
    """A gradient with a square that moves with the step: compressible, and different per frame."""
    height, width = frame_size
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 120, height, dtype=np.uint8)[:, None]
    img[..., 2] = (40 * camera + 10 * episode) % 256
    side = max(height // 6, 2)
    y, x = (3 * step) % (height - side), (5 * step + 7 * episode) % (width - side)
    img[y : y + side, x : x + side] = (255, 255 - 60 * camera % 256, 0)
    return img


def encode(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG" if fmt == "jpeg" else "PNG", quality=95)
    return buf.getvalue()


def episode_record(
    episode: int,
    steps: int,
    frame_size: tuple[int, int],
    cameras: Sequence[str],
    state_dims: Mapping[str, int],
    bad: str = "",
) -> dict[str, tuple[object, str]]:
    """One episode as the ``tfrecord`` writer takes it: flattened key -> (flat values, list type)."""
    if bad == "empty":
        steps = 0
    values = episode_values(episode, steps, state_dims)
    if bad == "inf_action" and steps:
        values["steps/action"][steps // 2, 0] = np.inf
    record: dict[str, tuple[object, str]] = {k: (v.ravel().tolist(), "float") for k, v in values.items()}
    if bad == "ragged_state":
        key = f"steps/observation/{next(iter(state_dims))}"
        record[key] = (record[key][0][:-1], "float")
    for i, cam in enumerate(cameras):
        blobs = [encode(frame(episode, t, i, frame_size), camera_format(i)) for t in range(steps)]
        if bad == "bad_frame" and steps:
            blobs[steps // 2] = b"not an image"
        record[f"steps/observation/{cam}"] = (blobs, "byte")
    flags = np.zeros(steps, np.int64)
    last = flags.copy()
    if steps:
        flags[0], last[-1] = 1, 1
    record["steps/is_first"] = (flags.tolist(), "int")
    record["steps/is_last"] = (last.tolist(), "int")
    record["steps/is_terminal"] = (last.tolist(), "int")
    record["steps/reward"] = (last.astype(float).tolist(), "float")
    record["steps/discount"] = ([1.0] * steps, "float")
    record["steps/language_instruction"] = ([instruction_for(episode).encode()] * steps, "byte")
    record["steps/language_embedding"] = ([0.5] * (4 * steps), "float")
    record["episode_metadata/file_path"] = ([f"/raw/episode_{episode:04d}.h5".encode()], "byte")
    return record


def write_rlds(
    root: str | Path,
    episodes: int = 4,
    steps: int = STEPS,
    frame_size: tuple[int, int] = FRAME,
    cameras: Sequence[str] = ("image", "wrist_image"),
    *,
    shards: int = 2,
    val_episodes: int = 0,
    state_dims: Mapping[str, int] | None = None,
    bad: Mapping[int, str] | None = None,
    name: str = "toy_rlds",
    version: str = "1.0.0",
) -> Path:
    """Write an RLDS dataset under ``root`` and return its version folder. ``bad`` maps a train
    episode's index to one of BAD_KINDS; a ``val`` split of ``val_episodes`` (one shard) is added
    when > 0. Episodes are written one at a time, so this also makes multi-GB sources."""
    state_dims = dict(state_dims or {"state": 8})
    bad = dict(bad or {})
    folder = Path(root) / name / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "features.json").write_text(
        json.dumps(features_json(frame_size, cameras, state_dims), indent=4)
    )
    plan = {"train": (range(episodes), shards)}
    if val_episodes:
        plan["val"] = (range(episodes, episodes + val_episodes), 1)
    splits = []
    for split, (indices, count) in plan.items():
        lengths, size = [], 0
        for shard, chunk in enumerate(np.array_split(np.asarray(indices), count)):
            path = folder / f"{name}-{split}.tfrecord-{shard:05d}-of-{count:05d}"
            writer = TFRecordWriter(str(path))
            for episode in chunk:
                episode = int(episode)
                writer.write(
                    episode_record(episode, steps, frame_size, cameras, state_dims, bad.get(episode, ""))
                )
            writer.close()
            lengths.append(str(len(chunk)))
            size += path.stat().st_size
        splits.append(
            {
                "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                "name": split,
                "numBytes": str(size),
                "shardLengths": lengths,
            }
        )
    info = {
        "citation": "",
        "description": "A toy RLDS dataset written by hpt-kit-rlds's tests.",
        "fileFormat": "tfrecord",
        "moduleName": f"{name}.{name}_dataset_builder",
        "name": name,
        "releaseNotes": {version: "Initial release."},
        "splits": splits,
        "version": version,
    }
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--cameras", nargs="+", default=["image", "wrist_image"])
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    folder = write_rlds(
        args.out, args.episodes, args.steps, tuple(args.size), args.cameras, shards=args.shards
    )
    print(folder)


if __name__ == "__main__":
    main()
