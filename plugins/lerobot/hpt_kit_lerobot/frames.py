"""Camera frames: decoded from mp4 by presentation time, or from images stored in parquet.

A LeRobot row's frame is the one the camera showed at the row's ``timestamp`` (plus, in v3, the
episode's ``from_timestamp`` inside a file holding several episodes). Each row gets the decoded
frame whose presentation time is nearest; one further away than half the camera's frame period
means the timestamps and the video disagree, and the episode is reported rather than guessed. The
same rule serves cameras recorded at another rate than the dataset.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
from av.video.reformatter import VideoReformatter
from hpt_kit.engine import thread_budget

from hpt_kit_lerobot.meta import EpisodeProblem, VideoRef

SLACK_S = 1e-4  # float32 timestamps and rounded pts: LeRobot's own tolerance_s default
IMAGE_CODECS = {b"\x89PNG": "png", b"\xff\xd8": "mjpeg"}  # magic bytes -> decoder
IMAGE_FORMATS = {b"\x89PNG": "png", b"\xff\xd8": "jpeg"}  # magic bytes -> the name describe() reports


def video_frames(
    ref: VideoRef, times: np.ndarray, fps: float, size: tuple[int, int] | None, where: str
) -> np.ndarray:
    """The frames nearest ``ref.start + times`` as (T, H, W, 3) uint8, scaled to ``size`` (H, W).

    Decodes once, forward from the keyframe before the first time, and stops past the last:
    a v3 file holding many episodes is not decoded from its beginning for each of them.
    """
    if ref.problem:
        raise EpisodeProblem(ref.problem)
    if not ref.path.exists():
        raise EpisodeProblem(f"{ref.path}: video of {where} not found")
    targets = ref.start + np.asarray(times, dtype=np.float64)
    try:
        with av.open(str(ref.path)) as container:
            if not container.streams.video:
                raise EpisodeProblem(f"{ref.path}: no video stream ({where})")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = thread_budget() or 0  # a worker's share of the cores; 0: FFmpeg's choice
            fps = fps or float(stream.average_rate or 0) or 30.0
            tolerance = 0.5 / fps + SLACK_S
            first = float(targets.min()) if len(targets) else 0.0
            if first - tolerance > 0:
                container.seek(int((first - tolerance) / stream.time_base), stream=stream, backward=True)
            frames, shown = _nearest(container.decode(stream), targets, fps, _Scaler(size))
    except (av.FFmpegError, ValueError) as exc:  # PyAV says ValueError where FFmpeg has no decoder
        raise EpisodeProblem(f"{ref.path}: cannot decode ({where}): {exc}") from None
    _check_times(ref, targets, shown, tolerance, where)
    return frames


class _Scaler:
    """Frames to RGB at one size (the first frame's where none is asked). One swscale context is
    kept for all the frames of a file (``frame.reformat`` would build one per frame, five times
    slower), single-threaded because the decoder already keeps the cores busy."""

    def __init__(self, size: tuple[int, int] | None):
        self.size = size
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            self.size = (frame.height, frame.width)
        height, width = self.size
        return self._reformatter.reformat(frame, width=width, height=height, format="rgb24", threads=1).to_ndarray()


def _nearest(decoded, targets: np.ndarray, fps: float, scale: _Scaler):
    """Assigns each target the decoded frame nearest it, in one forward pass.

    Frames arrive in presentation order; the targets, visited in increasing order, take the
    previous frame while they lie before the midpoint between it and the next one. Returns the
    frames and, per target, the presentation time of the frame it took.
    """
    order = np.argsort(targets, kind="stable")
    shown = np.full(len(targets), np.nan)
    out: np.ndarray | None = None
    prev = prev_rgb = None
    prev_t = 0.0
    j = 0
    for count, frame in enumerate(decoded):
        t = frame.time if frame.time is not None else count / fps
        if prev is not None:
            while j < len(order) and targets[order[j]] <= (prev_t + t) / 2:
                prev_rgb, out = _place(out, prev, prev_rgb, order[j], len(targets), scale)
                shown[order[j]] = prev_t
                j += 1
            if j == len(order):
                break
        prev, prev_rgb, prev_t = frame, None, t
    while prev is not None and j < len(order):
        prev_rgb, out = _place(out, prev, prev_rgb, order[j], len(targets), scale)
        shown[order[j]] = prev_t
        j += 1
    if out is None:
        out = np.zeros((len(targets), *(scale.size or (0, 0)), 3), np.uint8)
    return out, shown


def _place(out, frame, rgb, row: int, rows: int, scale: _Scaler):
    """Writes ``frame`` (converted once, however many rows take it) into ``out[row]``."""
    if rgb is None:
        rgb = scale(frame)
    if out is None:
        out = np.empty((rows, *rgb.shape), np.uint8)
    out[row] = rgb
    return rgb, out


def _check_times(ref: VideoRef, targets: np.ndarray, shown: np.ndarray, tolerance: float, where: str) -> None:
    if len(targets) and np.isnan(shown).all():
        raise EpisodeProblem(f"{ref.path}: no frames decoded for {where}")
    off = np.abs(targets - shown)
    outside = np.zeros(len(targets), bool)
    if ref.stop is not None:  # v3: the row must fall inside the episode's own span of the file
        outside = (targets < ref.start - tolerance) | (targets > ref.stop + tolerance)
    bad = np.flatnonzero(~(off <= tolerance) | outside)
    if len(bad):
        i = int(bad[0])
        raise EpisodeProblem(
            f"{ref.path}: timestamps do not match the frames for {where}: {len(bad)} rows have no frame "
            f"within {tolerance * 1000:.1f} ms, the first row {i} at {targets[i] - ref.start:.4f}s "
            f"(file time {targets[i]:.4f}s, nearest frame {shown[i]:.4f}s)"
        )


def image_frames(column: pa.ChunkedArray, root: Path, size: tuple[int, int] | None, where: str) -> np.ndarray:
    """Images stored in parquet (LeRobot's ``image`` dtype: a struct of encoded ``bytes`` and a
    ``path``) as (T, H, W, 3) uint8, decoded with PyAV's image decoders and scaled to ``size``."""
    out: np.ndarray | None = None
    scale = _Scaler(size)
    for row, value in enumerate(column.to_pylist()):
        data = _image_bytes(value, root, f"{where}, row {row}")
        try:
            frame = _decode_image(data)
        except (av.FFmpegError, IndexError, ValueError) as exc:
            raise EpisodeProblem(f"{where}, row {row}: image cannot be decoded ({exc})") from None
        rgb = scale(frame)
        if out is None:
            out = np.empty((len(column), *rgb.shape), np.uint8)
        out[row] = rgb
    if out is None:
        out = np.zeros((0, *(size or (0, 0)), 3), np.uint8)
    return out


def _image_bytes(value, root: Path, where: str) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            path = Path(value["path"])
            path = path if path.is_absolute() else root / path
            if not path.exists():
                raise EpisodeProblem(f"{path}: image file of {where} not found")
            return path.read_bytes()
    elif isinstance(value, bytes):
        return value
    raise EpisodeProblem(f"{where}: no image bytes or path")


def _decode_image(data: bytes) -> av.VideoFrame:
    """One encoded image. A fresh decoder each time: FFmpeg's PNG decoder keeps the previous
    picture (for APNG) and blends a reused context's next image with it."""
    codec = next((name for magic, name in IMAGE_CODECS.items() if data.startswith(magic)), None)
    if codec is None:  # another format (webp, bmp...): let FFmpeg probe it
        with av.open(io.BytesIO(data)) as container:
            return next(container.decode(video=0))
    return av.CodecContext.create(codec, "r").decode(av.Packet(data))[0]
