"""The policy server's messages: msgpack maps, numpy arrays carried as typed raw bytes.

Shared by the server (``hpt_kit.serve``) and the client (``hpt_kit.client``), which needs nothing
but numpy, msgpack and websockets: a robot's computer does not have to install torch.

Requests are maps with ``op`` ("metadata", "reset", "act", "chunk", "stats") and an ``id`` echoed
in the reply; replies carry ``ok`` and either ``result`` or ``error`` (one line naming the field).
Protocol 2 added "chunk" (a whole predicted chunk with the step it was predicted for).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ARRAY = "__ndarray__"  # the marker key of an encoded array
DTYPES = ("float32", "float64", "float16", "uint8", "int8", "int16", "int32", "int64", "bool")
PROTOCOL = 2


class WireError(ValueError):
    """A message that cannot be decoded; the message names what is wrong."""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in DTYPES:
            raise TypeError(f"arrays of dtype {obj.dtype} are not sent; use one of {', '.join(DTYPES)}")
        return {ARRAY: True, "dtype": obj.dtype.name, "shape": list(obj.shape), "data": np.ascontiguousarray(obj).tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__}")


def _hook(obj: dict) -> Any:
    if obj.get(ARRAY) is not True:
        return obj
    try:
        dtype, shape, data = np.dtype(obj["dtype"]), tuple(int(s) for s in obj["shape"]), obj["data"]
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"a malformed array ({exc})") from None
    if dtype.name not in DTYPES:
        raise WireError(f"arrays of dtype {dtype} are not accepted")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise WireError(f"an array of shape {shape} and dtype {dtype} with {len(data) if isinstance(data, bytes) else '?'} bytes")
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)  # writable: torch refuses to share a read-only buffer


def encode(message: dict[str, Any]) -> bytes:
    import msgpack

    return msgpack.packb(message, default=_default, use_bin_type=True)


def decode(payload: bytes | str) -> dict[str, Any]:
    """A message as a dict; anything else (text frames, not msgpack, not a map) is a WireError."""
    import msgpack

    if not isinstance(payload, bytes):
        raise WireError("messages are binary msgpack frames, not text")
    try:
        message = msgpack.unpackb(payload, object_hook=_hook, raw=False, strict_map_key=True)
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for bad input
        raise WireError(f"not a msgpack message ({type(exc).__name__}: {exc})") from None
    if not isinstance(message, dict):
        raise WireError(f"a message is a map, got {type(message).__name__}")
    return message
