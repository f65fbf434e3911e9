"""One episode's ``tf.train.Example`` to arrays: flat value lists reshaped to (T, D), encoded frames
decoded with Pillow, the instruction from the first step.

TFDS stores each per-step feature of an episode as one list holding every step's values in a row:
floats (float64 included) in a ``float_list``, integers and bools in an ``int64_list``, strings and
encoded images (one JPEG or PNG file per step) in a ``bytes_list``; tensors declared with
``encoding='bytes'`` or ``'zlib'`` keep one raw (or zlib-compressed) buffer per step instead.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from hpt_kit_rlds.schema import Leaf


def _example_pb2():
    """tfrecord's generated ``tf.train.Example`` classes (they need only protobuf), loaded without
    running the tfrecord package's ``__init__``, which imports torch for its data loader: about 1.2 s
    of every import command's start-up and of every worker's. Registered under its own name, so a
    later ``import tfrecord`` uses this module instead of defining the messages twice."""
    name = "tfrecord.example_pb2"
    if name in sys.modules or "tfrecord" in sys.modules:
        return importlib.import_module(name)
    package = importlib.util.find_spec("tfrecord")
    if package is None or not package.submodule_search_locations:
        raise ImportError("the tfrecord package is not installed; pip install 'hpt-kit-rlds' installs it")
    path = f"{package.submodule_search_locations[0]}/example_pb2.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


example_pb2 = _example_pb2()


class EpisodeProblem(Exception):
    """This episode cannot be read (the rest of the source can); the message names the key."""


def parse_example(record: bytes | memoryview) -> Mapping[str, example_pb2.Feature]:
    example = example_pb2.Example()
    example.ParseFromString(record)
    return example.features.feature


def stored_values(features: Mapping[str, example_pb2.Feature], key: str) -> tuple[str, Sequence]:
    """The list's kind ("float_list", "int64_list", "bytes_list"; "" when unset) and its values."""
    if key not in features:
        raise EpisodeProblem(f"key {key!r} is missing from the episode's record")
    feature = features[key]
    kind = feature.WhichOneof("kind")
    return (kind, getattr(feature, kind).value) if kind else ("", ())


def step_count(features: Mapping[str, example_pb2.Feature], reference: Leaf) -> int:
    """Steps in the episode, counted on a key with one value per step (``is_first`` where it exists)."""
    _, values = stored_values(features, reference.key)
    if reference.encoding in ("bytes", "zlib"):
        return len(values)
    if len(values) % reference.width:
        raise EpisodeProblem(
            f"key {reference.key!r}: {len(values)} values is not a whole number of steps of {reference.width}"
        )
    return len(values) // reference.width


def vector(leaf: Leaf, features: Mapping[str, example_pb2.Feature], steps: int) -> np.ndarray:
    """(T, D) numbers, in the stored precision (float32 or int64 for TFDS's default encoding)."""
    kind, values = stored_values(features, leaf.key)
    if leaf.encoding in ("bytes", "zlib"):
        rows = _raw_tensors(leaf, values, steps)
        return np.stack(rows).reshape(steps, leaf.width) if rows else np.empty((0, leaf.width), np.float32)
    if kind == "bytes_list":
        raise EpisodeProblem(
            f"key {leaf.key!r}: stored as bytes, but features.json declares {leaf.dtype} numbers"
        )
    arr = np.array(values, dtype=np.float32 if kind == "float_list" else np.int64)
    if leaf.dtype == "uint64":  # TFDS bit-casts uint64 to int64 to fit tf.train.Example
        arr = arr.view(np.uint64)
    if arr.size != steps * leaf.width:
        raise EpisodeProblem(
            f"key {leaf.key!r}: {arr.size} values for {steps} steps of {leaf.width} "
            f"(ragged: not the declared shape {leaf.shape} per step)"
        )
    return arr.reshape(steps, leaf.width)


def _raw_tensors(leaf: Leaf, values: Sequence, steps: int) -> list[np.ndarray]:
    if len(values) != steps:
        raise EpisodeProblem(f"key {leaf.key!r}: {len(values)} encoded tensors for {steps} steps")
    rows = []
    for t, blob in enumerate(values):
        try:
            raw = zlib.decompress(blob) if leaf.encoding == "zlib" else blob
        except zlib.error as exc:
            raise EpisodeProblem(f"key {leaf.key!r}, step {t}: bad zlib data ({exc})") from None
        row = np.frombuffer(raw, dtype=np.dtype(leaf.dtype))
        if row.size != leaf.width:
            raise EpisodeProblem(
                f"key {leaf.key!r}, step {t}: {row.size} values, declared shape {leaf.shape}"
            )
        rows.append(row)
    return rows


def frames(
    leaf: Leaf, features: Mapping[str, example_pb2.Feature], steps: int, size: tuple[int, int] | None
) -> np.ndarray:
    """(T, H, W, 3) uint8, scaled to ``size`` (height, width) when given."""
    if not leaf.image:  # a raw uint8 tensor per step
        pixels = vector(leaf, features, steps).astype(np.uint8).reshape(steps, *leaf.shape)
        if leaf.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        if size is None:
            return pixels
        return _filled(leaf, (_resized(Image.fromarray(p), size) for p in pixels), steps)
    _, blobs = stored_values(features, leaf.key)
    if len(blobs) != steps:
        raise EpisodeProblem(f"key {leaf.key!r}: {len(blobs)} frames for {steps} steps")
    return _filled(leaf, (_decoded(leaf, t, blob, size) for t, blob in enumerate(blobs)), steps)


def _decoded(leaf: Leaf, step: int, blob: bytes, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as img:
            if size is not None:  # JPEG: decode at a reduced scale no smaller than the target (much faster)
                img.draft("RGB", (size[1], size[0]))
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        why = re.sub(r" <[^>]* at 0x[0-9a-f]+>", "", str(exc))  # PIL names the buffer by its address: not the same twice
        raise EpisodeProblem(f"key {leaf.key!r}, step {step}: cannot decode the image ({why})") from None
    return _resized(rgb, size) if size is not None else np.asarray(rgb)


def _resized(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)  # antialiased when shrinking
    return np.asarray(img)


def _filled(leaf: Leaf, items: Iterator[np.ndarray], steps: int) -> np.ndarray:
    """The frames in one preallocated array (an episode's frames are the bulk of its memory)."""
    out: np.ndarray | None = None
    for t, item in enumerate(items):
        if out is None:
            out = np.empty((steps, *item.shape), np.uint8)
        elif item.shape != out.shape[1:]:
            raise EpisodeProblem(f"key {leaf.key!r}: frame {t} is {item.shape}, frame 0 is {out.shape[1:]}")
        out[t] = item
    return out if out is not None else np.empty((0, 0, 0, 3), np.uint8)


def frame_shape(leaf: Leaf, features: Mapping[str, example_pb2.Feature]) -> tuple[int, int, int] | None:
    """(H, W, C) of the first encoded frame, from its header alone."""
    if leaf.key not in features:
        return None
    _, blobs = stored_values(features, leaf.key)
    if not blobs:
        return None
    try:
        with Image.open(io.BytesIO(blobs[0])) as img:
            return (img.height, img.width, len(img.getbands()))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def text(leaf: Leaf, features: Mapping[str, example_pb2.Feature]) -> str | None:
    """The first step's string (RLDS repeats the instruction at every step); None when empty."""
    if leaf.key not in features:
        return None
    _, values = stored_values(features, leaf.key)
    if not values:
        return None
    first = values[0]
    return first.decode("utf-8", errors="replace") if isinstance(first, bytes) else str(first)
