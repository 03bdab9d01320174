"""AIFF and AIFF-C headers: the frames ``COMM`` declares against the object.

Big-endian IFF chunks, padded to even sizes. ``SSND`` starts with an offset
and a block size (8 bytes), then the sample frames.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from .containers import Declared

# AIFF-C compression types whose frames are channels x ceil(bits / 8) bytes; mu-law and
# A-law say 16 bits and store one byte.
_PCM = (b"NONE", b"twos", b"sowt", b"raw ", b"in24", b"in32", b"fl32", b"FL32", b"fl64", b"FL64")
_BYTE_LAWS = (b"ulaw", b"ULAW", b"alaw", b"ALAW")


def declared(fh: BinaryIO, size: int) -> Declared:
    """Frames ``COMM`` declares, and those the object holds after ``SSND``'s offset."""
    fh.seek(0)
    head = fh.read(12)
    aifc = head[8:12] == b"AIFC"
    frames = frame_bytes = data_start = None
    pos = 12
    while pos + 8 <= size and (frames is None or data_start is None):
        fh.seek(pos)
        cid, length = struct.unpack(">4sI", fh.read(8))
        if cid == b"COMM":
            body = fh.read(min(length, 22))
            if len(body) >= 8:
                channels, frames, bits = struct.unpack(">HIH", body[:8])
                kind = body[18:22] if aifc and len(body) >= 22 else b"NONE"
                width = 1 if kind in _BYTE_LAWS else (bits + 7) // 8 if kind in _PCM else 0
                frame_bytes = channels * width or None
        elif cid == b"SSND":
            offset = fh.read(4)
            if len(offset) == 4:
                data_start = pos + 16 + struct.unpack(">I", offset)[0]
        pos += 8 + length + (length & 1)
    held = (size - data_start) // frame_bytes if data_start is not None and frame_bytes else None
    return Declared(frames, None if held is None or frames is None else min(held, frames))
