"""How camera frames are brought to a dataset's frame size: one function, numpy only, so the robot's
side can give the policy its camera frames exactly as the training data holds them.

``fit_frames(frames, height, width, fit)`` scales (..., H, W, 3) uint8 frames to height x width:

- ``"pad"`` (the default): scaled by the larger factor that fits both sides, aspect ratio kept,
  centred on black (zero) bars;
- ``"crop"``: scaled by the smaller factor that covers both sides, aspect ratio kept, the centre
  cut out;
- ``"stretch"``: both sides scaled to the size, aspect ratio not kept.

Scaling is separable linear interpolation with pixel centres aligned (``align_corners=False``) and,
when shrinking, a triangle filter widened by the shrink factor (antialiasing, as PIL's bilinear
and torch's ``antialias=True`` do), in float32, rounded to the nearest integer.
"""

from __future__ import annotations

import numpy as np

FITS = ("pad", "crop", "stretch")


def fitted_shape(source: tuple[int, int], height: int, width: int, fit: str = "pad") -> tuple[int, int]:
    """The (height, width) a source frame of ``source`` (H, W) is scaled to before padding or cropping."""
    _check_fit(fit)
    h, w = source
    if fit == "stretch":
        return height, width
    scale = min(height / h, width / w) if fit == "pad" else max(height / h, width / w)
    inner = (max(1, round(h * scale)), max(1, round(w * scale)))
    return (min(inner[0], height), min(inner[1], width)) if fit == "pad" else (max(inner[0], height), max(inner[1], width))


def fit_frames(frames: np.ndarray, height: int, width: int, fit: str = "pad") -> np.ndarray:
    """(..., H, W, 3) uint8 frames -> (..., height, width, 3) uint8 (see the module docstring)."""
    frames = np.asarray(frames)
    if frames.ndim < 3 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (..., H, W, 3) uint8, got shape {frames.shape} and dtype {frames.dtype}")
    if height < 1 or width < 1:
        raise ValueError(f"the frame size must be at least 1 x 1, got {height} x {width}")
    source = frames.shape[-3:-1]
    if source == (height, width):
        return frames
    inner = fitted_shape(source, height, width, fit)
    scaled = _resize(frames, *inner)
    if inner == (height, width):
        return scaled
    top, left = abs(inner[0] - height) // 2, abs(inner[1] - width) // 2
    if fit == "crop":
        return np.ascontiguousarray(scaled[..., top : top + height, left : left + width, :])
    out = np.zeros((*frames.shape[:-3], height, width, 3), np.uint8)
    out[..., top : top + inner[0], left : left + inner[1], :] = scaled
    return out


def _check_fit(fit: str) -> None:
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")


def _weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) interpolation matrix along one axis: linear, antialiased when shrinking."""
    scale = n_in / n_out
    support = max(scale, 1.0)  # the triangle's half-width in input pixels
    centres = (np.arange(n_out) + 0.5) * scale  # output pixel centres in input coordinates
    inputs = np.arange(n_in) + 0.5
    w = np.clip(1.0 - np.abs(inputs[None, :] - centres[:, None]) / support, 0.0, None)
    if scale < 1.0:  # enlarging: edge pixels repeat beyond the border, as align_corners=False does
        w[:, 0] += np.clip(1.0 - np.abs(-0.5 - centres) / support, 0.0, None) * (centres < 0.5)
        w[:, -1] += np.clip(1.0 - np.abs(n_in + 0.5 - centres) / support, 0.0, None) * (centres > n_in - 0.5)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _resize(frames: np.ndarray, height: int, width: int, chunk: int = 32) -> np.ndarray:
    lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
    flat = frames.reshape(-1, h, w, 3)
    parts = [_resize_flat(flat[i : i + chunk], height, width) for i in range(0, len(flat), chunk)]  # bounded memory
    return np.concatenate(parts).reshape(*lead, height, width, 3)


def _resize_flat(x: np.ndarray, height: int, width: int) -> np.ndarray:
    n, h, w = x.shape[:3]
    # Each pass is one matrix product over all frames: rows first, then columns.
    x = x.transpose(1, 0, 2, 3).reshape(h, n * w * 3).astype(np.float32)  # (h, N*w*3)
    x = (_weights(h, height) @ x).reshape(height, n, w, 3)  # (height, N, w, 3)
    x = x.transpose(1, 0, 3, 2).reshape(n * height * 3, w) @ _weights(w, width).T  # (N*height*3, width)
    x = x.reshape(n, height, 3, width).transpose(0, 1, 3, 2)  # (N, height, width, 3)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
