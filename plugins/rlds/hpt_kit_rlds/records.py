"""TFRecord frames, read with both of their checksums verified.

A frame is ``length`` (uint64, little-endian), the masked CRC-32C of those 8 bytes, ``length`` bytes
of data and the masked CRC-32C of the data (TensorFlow's ``core/lib/io/record_writer``). The
``tfrecord`` package's reader skips both checksums, so a flipped byte inside a record reached the
decoder and, in a JPEG frame, the dataset. Here every frame is checked with the ``crc32c`` package
(hardware CRC-32C where the CPU has it; the kit already depends on it for its dataset chunks).

A data checksum that fails spoils that record only: the frame's length was verified, so reading goes
on at the next one. A length checksum that fails, or a frame cut short, leaves nothing after it
trustworthy: that is the shard's last item.

Reading from record ``start`` passes over the records before it by their lengths (each length's
checksum verified, their data neither read nor checked), so a range of episodes that starts inside a
shard costs a seek per earlier record, not a read and a decode.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from crc32c import crc32c

MASK_DELTA = 0xA282EAD8  # TensorFlow's crc32c::Mask
HEADER = 12  # length (8) + its masked CRC (4)
FOOTER = 4  # the data's masked CRC


def masked_crc(data: bytes | bytearray | memoryview) -> int:
    """TFRecord's masked CRC-32C: the CRC rotated right by 15 bits, plus a constant (mod 2**32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    """One record of a shard: its data, or why it cannot be used (``last``: nothing after it can be read)."""

    index: int
    data: bytes | None
    problem: str = ""
    last: bool = False


def _length(fh: BinaryIO, index: int, verify: bool) -> int | Frame | None:
    """The data length in record ``index``'s header, read from ``fh``; None at the end of the file,
    or the last frame saying why the header cannot be used (cut short, or its CRC-32C wrong)."""
    header = fh.read(HEADER)
    if not header:
        return None
    if len(header) < HEADER:
        return Frame(index, None, f"truncated at record {index} ({len(header)} of its {HEADER} header bytes)", True)
    (length,) = struct.unpack_from("<Q", header)
    (length_crc,) = struct.unpack_from("<I", header, 8)
    if verify and masked_crc(header[:8]) != length_crc:
        return Frame(index, None, f"record {index}: its length's CRC-32C does not match (length field damaged)", True)
    return length


def read_frames(path: str | Path, verify: bool = True, start: int = 0) -> Iterator[Frame]:
    """The frames of one TFRecord file in order, from record ``start`` on (see the module docstring;
    a damaged or cut-short record before ``start`` is still yielded, as the last, and a file that
    ends before ``start`` yields a last frame with no problem, at the index where it ended).
    ``verify=False`` skips both checksums (only for measuring what they cost)."""
    with open(path, "rb", buffering=0) as fh:
        index = 0
        size = os.fstat(fh.fileno()).st_size
        while index < start:
            length = _length(fh, index, verify)
            if not isinstance(length, int):
                yield length or Frame(index, None, "", True)
                return
            body = size - fh.tell()
            if body < length + FOOTER:
                yield Frame(index, None, f"truncated at record {index} ({body} of its {length + FOOTER} bytes)", True)
                return
            fh.seek(length + FOOTER, os.SEEK_CUR)
            index += 1
        while True:
            length = _length(fh, index, verify)
            if not isinstance(length, int):
                if length is not None:
                    yield length
                return
            body = fh.read(length + FOOTER)
            if len(body) < length + FOOTER:
                yield Frame(index, None, f"truncated at record {index} ({len(body)} of its {length + FOOTER} bytes)", True)
                return
            data = memoryview(body)[:length]
            if verify:
                (data_crc,) = struct.unpack_from("<I", body, length)
                if masked_crc(data) != data_crc:
                    yield Frame(index, None, f"record {index}: its data's CRC-32C does not match (the {length}-byte record is damaged)")
                    index += 1
                    continue
            yield Frame(index, data)
            index += 1
