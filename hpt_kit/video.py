"""Episode videos on disk, and a contact sheet of many episodes.

Two formats, chosen by the file's suffix: ``.mp4`` (H.264 through PyAV, the extra ``hpt-kit[video]``;
any player shows it) and ``.npz`` (``frames`` (T, H, W, 3) uint8, ``fps``, ``success``; no codec
needed, frames exact). :func:`read_frames` reads either back. H.264 in yuv420p wants even sizes, so an
odd-sized frame is padded by one black row or column.

Part of the plugin-facing floor (:mod:`hpt_kit.rollout` writes through it): numpy and the standard
library at import time, PyAV only inside the functions that need it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

VIDEO_FORMATS = ("mp4", "npz")
SUCCESS_RGB = (40, 200, 60)  # contact-sheet border of a successful episode
FAILURE_RGB = (220, 40, 40)
UNKNOWN_RGB = (128, 128, 128)


def _av():
    try:
        import av
    except ImportError:
        raise ImportError("mp4 videos need PyAV: pip install 'hpt-kit[video]' (or write .npz videos)") from None
    return av


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad (T, H, W, 3) to even H and W (yuv420p halves both for its colour planes)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    return frames


def write_video(path: Path, frames: np.ndarray | Sequence[np.ndarray], fps: float, success: bool | None = None) -> Path:
    """Write (T, H, W, 3) uint8 frames to ``path`` (``.mp4`` or ``.npz``). An mp4 records ``success``
    in its ``comment`` metadata as JSON; an npz as an array."""
    path = Path(path)
    frames = np.asarray(np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"{path}: frames must be (T, H, W, 3) uint8 with T >= 1, got {frames.shape} {frames.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez_compressed(path, frames=frames, fps=fps, success=bool(success))
        return path
    if suffix != ".mp4":
        raise ValueError(f"{path}: unknown video format {suffix!r}; known: {', '.join(VIDEO_FORMATS)}")
    av = _av()
    frames = _even(frames)
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format="mp4") as container:
        container.metadata["comment"] = json.dumps({"success": success, "fps": fps})
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    tmp.replace(path)
    return path


def read_frames(path: Path, limit: int | None = None) -> np.ndarray:
    """The frames of a video written by :func:`write_video` (or any mp4 PyAV decodes), as
    (T, H, W, 3) uint8; ``limit`` stops after that many frames."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path) as data:
            return data["frames"][:limit]
    frames = []
    with _av().open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) >= limit:
                break
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return np.stack(frames)


def contact_sheet(
    path: Path, firsts: Sequence[np.ndarray], successes: Sequence[bool | None], columns: int = 8, border: int = 3
) -> Path:
    """One PNG of many episodes' first frames, row by row in episode order, each framed green
    (success), red (failure) or grey (unknown). Frames of different sizes are placed top-left in
    cells of the largest one."""
    if not firsts:
        raise ValueError(f"{path}: no frames for a contact sheet")
    cell_h = max(f.shape[0] for f in firsts) + 2 * border
    cell_w = max(f.shape[1] for f in firsts) + 2 * border
    columns = min(columns, len(firsts))
    rows = -(-len(firsts) // columns)
    sheet = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for i, (frame, success) in enumerate(zip(firsts, successes, strict=True)):
        top, left = (i // columns) * cell_h, (i % columns) * cell_w
        colour = UNKNOWN_RGB if success is None else SUCCESS_RGB if success else FAILURE_RGB
        h, w = frame.shape[:2]
        sheet[top : top + h + 2 * border, left : left + w + 2 * border] = colour
        sheet[top + border : top + border + h, left + border : left + border + w] = frame
    sheet = _even(sheet[None])[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    av = _av()
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = sheet.shape[1], sheet.shape[0], "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(sheet, format="rgb24")))
        container.mux(stream.encode())
    return path
