"""Small sources with the exact feature layouts TFDS publishes for the Open-X catalogue's datasets.

Each layout below is the "Feature structure" of the dataset's TFDS catalog page
(https://www.tensorflow.org/datasets/catalog/NAME), written as nested dicts: a leaf is
``("tensor", dtype, shape)``, ``("image", shape)`` or ``("text",)``. :func:`write_openx` writes the
version folder as TFDS does (``features.json``, ``dataset_info.json``, ``NAME-train.tfrecord-*``
shards of one ``tf.train.Example`` per episode) with the rlds tests' JSON helpers and the
``tfrecord`` writer; frame contents are small gradients, vectors smooth functions of the step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from rlds_fixtures import TFDS, encode, features_dict, frame, image, tensor, text
from tfrecord.writer import TFRecordWriter

RT1_ACTION = {  # world_vector / rotation_delta / gripper / terminate: the RT-1 style dict action
    "rotation_delta": ("tensor", "float32", (3,)),
    "terminate_episode": ("tensor", "float32", ()),
    "world_vector": ("tensor", "float32", (3,)),
}
LAYOUTS: dict[str, dict] = {
    "roboturk": {
        "action": {**RT1_ACTION, "gripper_closedness_action": ("tensor", "float32", (1,))},
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "front_rgb": ("image", (480, 640, 3)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
        },
        "reward": ("tensor", "float32", ()),
    },
    "taco_play": {
        "action": {
            "actions": ("tensor", "float32", (7,)),
            "rel_actions_gripper": ("tensor", "float32", (7,)),
            "rel_actions_world": ("tensor", "float32", (7,)),
            "terminate_episode": ("tensor", "float32", ()),
        },
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "depth_gripper": ("tensor", "float32", (84, 84)),
            "depth_static": ("tensor", "float32", (150, 200)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
            "rgb_gripper": ("image", (84, 84, 3)),
            "rgb_static": ("image", (150, 200, 3)),
            "robot_obs": ("tensor", "float32", (15,)),
            "structured_language_instruction": ("tensor", "string", ()),
        },
        "reward": ("tensor", "float32", ()),
    },
    "viola": {
        "action": {**RT1_ACTION, "gripper_closedness_action": ("tensor", "float32", ())},
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "agentview_rgb": ("image", (224, 224, 3)),
            "ee_states": ("tensor", "float32", (16,)),
            "eye_in_hand_rgb": ("image", (224, 224, 3)),
            "gripper_states": ("tensor", "float32", (1,)),
            "joint_states": ("tensor", "float32", (7,)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
        },
        "reward": ("tensor", "float32", ()),
    },
    "toto": {
        "action": {**RT1_ACTION, "open_gripper": ("tensor", "bool", ())},
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "image": ("image", (480, 640, 3)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
            "state": ("tensor", "float32", (7,)),
        },
        "reward": ("tensor", "float32", ()),
    },
    "jaco_play": {
        "action": {
            "gripper_closedness_action": ("tensor", "float32", (1,)),
            "terminate_episode": ("tensor", "int32", (3,)),
            "world_vector": ("tensor", "float32", (3,)),
        },
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "end_effector_cartesian_pos": ("tensor", "float32", (7,)),
            "end_effector_cartesian_velocity": ("tensor", "float32", (6,)),
            "image": ("image", (224, 224, 3)),
            "image_wrist": ("image", (224, 224, 3)),
            "joint_pos": ("tensor", "float32", (8,)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
        },
        "reward": ("tensor", "float32", ()),
    },
    "berkeley_autolab_ur5": {
        "action": {**RT1_ACTION, "gripper_closedness_action": ("tensor", "float32", ())},
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "hand_image": ("image", (480, 640, 3)),
            "image": ("image", (480, 640, 3)),
            "image_with_depth": ("image", (480, 640, 1), "float32"),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
            "robot_state": ("tensor", "float32", (15,)),
        },
        "reward": ("tensor", "float32", ()),
    },
    "stanford_hydra_dataset_converted_externally_to_rlds": {
        "action": ("tensor", "float32", (7,)),
        "discount": ("tensor", "float32", ()),
        "is_dense": ("tensor", "bool", ()),
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "language_embedding": ("tensor", "float32", (512,)),
        "language_instruction": ("text",),
        "observation": {
            "image": ("image", (240, 320, 3)),
            "state": ("tensor", "float32", (27,)),
            "wrist_image": ("image", (240, 320, 3)),
        },
        "reward": ("tensor", "float32", ()),
    },
    "kuka": {
        "action": {
            "base_displacement_vector": ("tensor", "float32", (2,)),
            "base_displacement_vertical_rotation": ("tensor", "float32", (1,)),
            "gripper_closedness_action": ("tensor", "float32", (1,)),
            "rotation_delta": ("tensor", "float32", (3,)),
            "terminate_episode": ("tensor", "int32", (3,)),
            "world_vector": ("tensor", "float32", (3,)),
        },
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {  # TFDS names two keys with a '/' inside, not as a nested dict
            "clip_function_input/base_pose_tool_reached": ("tensor", "float32", (7,)),
            "clip_function_input/workspace_bounds": ("tensor", "float32", (3, 3)),
            "gripper_closed": ("tensor", "float32", (1,)),
            "height_to_bottom": ("tensor", "float32", (1,)),
            "image": ("image", (512, 640, 3)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
            "task_id": ("tensor", "float32", (1,)),
        },
        "reward": ("tensor", "float32", ()),
    },
    "ucsd_kitchen_dataset_converted_externally_to_rlds": {
        "action": ("tensor", "float32", (8,)),
        "discount": ("tensor", "float32", ()),
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "language_embedding": ("tensor", "float32", (512,)),
        "language_instruction": ("text",),
        "observation": {"image": ("image", (480, 640, 3)), "state": ("tensor", "float32", (21,))},
        "reward": ("tensor", "float32", ()),
    },
    "berkeley_rpt_converted_externally_to_rlds": {
        "action": ("tensor", "float32", (8,)),
        "discount": ("tensor", "float32", ()),
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "language_embedding": ("tensor", "float32", (512,)),
        "language_instruction": ("text",),
        "observation": {
            "gripper": ("tensor", "bool", ()),
            "hand_image": ("image", (480, 640, 3)),
            "joint_pos": ("tensor", "float32", (7,)),
        },
        "reward": ("tensor", "float32", ()),
    },
    "ucsd_pick_and_place_dataset_converted_externally_to_rlds": {
        "action": ("tensor", "float32", (4,)),
        "discount": ("tensor", "float32", ()),
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "language_embedding": ("tensor", "float32", (512,)),
        "language_instruction": ("text",),
        "observation": {"image": ("image", (224, 224, 3)), "state": ("tensor", "float32", (7,))},
        "reward": ("tensor", "float32", ()),
    },
    "iamlab_cmu_pickup_insert_converted_externally_to_rlds": {
        "action": ("tensor", "float32", (8,)),
        "discount": ("tensor", "float32", ()),
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "language_embedding": ("tensor", "float32", (512,)),
        "language_instruction": ("text",),
        "observation": {
            "image": ("image", (360, 640, 3)),
            "state": ("tensor", "float32", (20,)),
            "wrist_image": ("image", (240, 320, 3)),
        },
        "reward": ("tensor", "float32", ()),
    },
    "austin_sirius_dataset_converted_externally_to_rlds": {
        "action": ("tensor", "float32", (7,)),
        "action_mode": ("tensor", "float32", (1,)),
        "discount": ("tensor", "float32", ()),
        "intv_label": ("tensor", "float32", (1,)),
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "language_embedding": ("tensor", "float32", (512,)),
        "language_instruction": ("text",),
        "observation": {
            "image": ("image", (84, 84, 3)),
            "state": ("tensor", "float32", (8,)),
            "state_ee": ("tensor", "float32", (16,)),
            "state_gripper": ("tensor", "float32", (1,)),
            "state_joint": ("tensor", "float32", (7,)),
            "wrist_image": ("image", (84, 84, 3)),
        },
        "reward": ("tensor", "float32", ()),
    },
    "fractal20220817_data": {
        "action": {
            "base_displacement_vector": ("tensor", "float32", (2,)),
            "base_displacement_vertical_rotation": ("tensor", "float32", (1,)),
            "gripper_closedness_action": ("tensor", "float32", (1,)),
            "rotation_delta": ("tensor", "float32", (3,)),
            "terminate_episode": ("tensor", "int32", (3,)),
            "world_vector": ("tensor", "float32", (3,)),
        },
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "base_pose_tool_reached": ("tensor", "float32", (7,)),
            "gripper_closed": ("tensor", "float32", (1,)),
            "gripper_closedness_commanded": ("tensor", "float32", (1,)),
            "height_to_bottom": ("tensor", "float32", (1,)),
            "image": ("image", (256, 320, 3)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
            "orientation_box": ("tensor", "float32", (2, 3)),
            "orientation_start": ("tensor", "float32", (4,)),
            "robot_orientation_positions_box": ("tensor", "float32", (3, 3)),
            "rotation_delta_to_go": ("tensor", "float32", (3,)),
            "src_rotation": ("tensor", "float32", (4,)),
            "vector_to_go": ("tensor", "float32", (3,)),
            "workspace_bounds": ("tensor", "float32", (3, 3)),
        },
        "reward": ("tensor", "float32", ()),
    },
    "nyu_door_opening_surprising_effectiveness": {
        "action": {
            "gripper_closedness_action": ("tensor", "float32", (1,)),
            "rotation_delta": ("tensor", "float32", (3,)),
            "terminate_episode": ("tensor", "float32", ()),
            "world_vector": ("tensor", "float32", (3,)),
        },
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "image": ("image", (720, 960, 3)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
        },
        "reward": ("tensor", "float32", ()),
    },
    "bridge": {
        "action": {**RT1_ACTION, "open_gripper": ("tensor", "bool", ())},
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "image": ("image", (480, 640, 3)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
            "state": ("tensor", "float32", (7,)),
        },
        "reward": ("tensor", "float32", ()),
    },
    "berkeley_cable_routing": {
        "action": RT1_ACTION,
        "is_first": ("tensor", "bool", ()), "is_last": ("tensor", "bool", ()), "is_terminal": ("tensor", "bool", ()),
        "observation": {
            "image": ("image", (128, 128, 3)),
            "natural_language_embedding": ("tensor", "float32", (512,)),
            "natural_language_instruction": ("tensor", "string", ()),
            "robot_state": ("tensor", "float32", (7,)),
            "top_image": ("image", (128, 128, 3)),
            "wrist225_image": ("image", (128, 128, 3)),
            "wrist45_image": ("image", (128, 128, 3)),
        },
        "reward": ("tensor", "float32", ()),
    },
}  # fmt: skip
# Per-episode features beside the steps (under episode_metadata, or at the top as kuka's success).
EPISODE_METADATA: dict[str, dict] = {
    "stanford_hydra_dataset_converted_externally_to_rlds": {"file_path": ("text",)},
    "ucsd_kitchen_dataset_converted_externally_to_rlds": {"file_path": ("text",)},
    "berkeley_rpt_converted_externally_to_rlds": {"file_path": ("text",)},
    "iamlab_cmu_pickup_insert_converted_externally_to_rlds": {"file_path": ("text",)},
    "austin_sirius_dataset_converted_externally_to_rlds": {"file_path": ("text",)},
    "ucsd_pick_and_place_dataset_converted_externally_to_rlds": {
        "disclaimer": ("text",),
        "file_path": ("text",),
        "n_transitions": ("tensor", "int32", ()),
        "success": ("tensor", "bool", ()),
        "success_labeled_by": ("text",),
    },
}
TOP_LEVEL: dict[str, dict] = {
    "kuka": {"success": ("tensor", "bool", ())},
    "fractal20220817_data": {  # per-episode labels beside the steps, as nested dicts
        "aspects": {k: ("tensor", "bool", ()) for k in ("already_success", "feasible", "has_aspects", "success", "undesirable")},
        "attributes": {
            **{k: ("tensor", "int64", ()) for k in ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")},
            **{f"{k}_name": ("tensor", "string", ()) for k in ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")},
        },
    },
}
INSTRUCTIONS = ("stack the bowls", "fold the cloth", "pour into the cup")


def _feature_json(node: Mapping | tuple) -> dict:
    if isinstance(node, Mapping):
        return features_dict({k: _feature_json(v) for k, v in node.items()})
    if node[0] == "image":
        doc = image(node[1], "jpeg" if len(node) == 2 else "png")
        if len(node) == 3:  # an Image of other pixels (a float32 depth image): TFDS stores it as PNG
            doc["image"]["dtype"] = node[2]
        return doc
    if node[0] == "text":
        return text()
    return tensor(node[2], node[1])


def features_json(layout: Mapping, episode: Mapping | None = None, top: Mapping | None = None) -> dict:
    steps = {
        "pythonClassName": f"{TFDS}.dataset_feature.Dataset",
        "sequence": {"feature": _feature_json(layout), "length": "-1"},
    }
    meta = {"episode_metadata": _feature_json(episode)} if episode else {}
    others = {k: _feature_json(v) for k, v in (top or {}).items()}
    return features_dict({**meta, "steps": steps, **others})


def _episode_value(leaf: tuple, episode: int) -> tuple[list, str]:
    """One value per episode, in the list type TFDS writes it with."""
    if leaf[0] == "text" or leaf[1] == "string":
        return [f"/raw/episode_{episode}".encode()], "byte"
    if leaf[1] == "bool" or leaf[1].startswith(("int", "uint")):
        return [episode % 2], "int"
    return [float(episode)], "float"


def _leaves(node: Mapping, prefix: str = "steps") -> list[tuple[str, tuple]]:
    out = []
    for name, child in node.items():
        key = f"{prefix}/{name}"
        out += _leaves(child, key) if isinstance(child, Mapping) else [(key, child)]
    return out


def episode_record(layout: Mapping, episode: int, steps: int) -> dict[str, tuple[object, str]]:
    """One episode in the wire form TFDS writes: every step's values of a key in one list."""
    record: dict[str, tuple[object, str]] = {}
    t = np.arange(steps, dtype=np.float64)
    for i, (key, leaf) in enumerate(_leaves(layout)):
        if leaf[0] == "image":
            height, width, channels = leaf[1]
            if channels == 1:  # a depth image: never a view, its content is never decoded
                blobs = [encode(np.zeros((height, width), np.uint8), "png")] * steps
            else:
                blobs = [encode(frame(episode, s, i % 4, (height, width)), "jpeg") for s in range(steps)]
            record[key] = (blobs, "byte")
            continue
        if leaf[0] == "text":
            words = INSTRUCTIONS[episode % len(INSTRUCTIONS)] if "instruction" in key else "x"
            record[key] = ([words.encode()] * steps, "byte")
            continue
        dtype, shape = leaf[1], leaf[2]
        width = int(np.prod(shape)) if shape else 1
        if dtype == "string":
            words = INSTRUCTIONS[episode % len(INSTRUCTIONS)] if "instruction" in key else "x"
            record[key] = ([words.encode()] * steps, "byte")
        elif dtype == "bool":
            if key.endswith("is_first"):
                values = (t == 0).astype(int)
            elif key.endswith(("is_last", "is_terminal")):
                values = (t == steps - 1).astype(int)
            else:
                values = ((t + episode) % 3 == 0).astype(int)
            record[key] = (values.tolist(), "int")
        elif dtype.startswith(("int", "uint")):  # integers go in an int64_list, as TFDS writes them
            values = (np.arange(steps * width) + episode) % 3
            record[key] = (values.tolist(), "int")
        else:
            values = np.sin(0.3 * t[:, None] + 0.1 * np.arange(width) + episode).astype(np.float32)
            record[key] = (values.ravel().tolist(), "float")
    return record


def write_openx(root: str | Path, name: str, episodes: int = 3, steps: int = 5, *, version: str = "0.1.0",
                layout: Mapping | None = None, shards: int = 1) -> Path:
    """The version folder ``root/name/version`` of a small source with the dataset's TFDS layout
    (or ``layout``, to write a changed one)."""
    layout = LAYOUTS[name] if layout is None else layout
    meta, top = EPISODE_METADATA.get(name, {}), TOP_LEVEL.get(name, {})
    folder = Path(root) / name / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "features.json").write_text(json.dumps(features_json(layout, meta, top), indent=2))
    lengths = []
    for shard, chunk in enumerate(np.array_split(np.arange(episodes), shards)):
        writer = TFRecordWriter(str(folder / f"{name}-train.tfrecord-{shard:05d}-of-{shards:05d}"))
        for episode in chunk:
            record = episode_record(layout, int(episode), steps)
            record |= {f"episode_metadata/{k}": _episode_value(v, int(episode)) for k, v in meta.items()}
            record |= {k.removeprefix("/"): _episode_value(v, int(episode)) for k, v in _leaves(top, "")}
            writer.write(record)
        writer.close()
        lengths.append(str(len(chunk)))
    info = {
        "description": f"a small source with the TFDS layout of {name}",
        "fileFormat": "tfrecord",
        "moduleName": "tensorflow_datasets.robotics.rtx.rtx",
        "name": name,
        "releaseNotes": {version: "Initial release."},
        "splits": [{"filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", "name": "train", "shardLengths": lengths}],
        "version": version,
    }
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return folder
