"""Apple Core Audio Format headers: the ``data`` chunk's declared length against the object.

Big-endian chunks with signed 64-bit sizes; a ``data`` size of -1 runs to
the end of the object. ``desc`` gives bytes and frames per packet.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from .containers import Declared

MAGIC = b"caff"


def declared(fh: BinaryIO, size: int) -> Declared:
    """Frames the ``data`` chunk declares, and those the object holds."""
    packet = None  # (bytes, frames) per packet
    pos = 8
    while pos + 12 <= size:
        fh.seek(pos)
        cid, length = struct.unpack(">4sq", fh.read(12))
        if cid == b"desc":
            body = fh.read(32)
            if len(body) >= 24:  # sample rate (f64), format, flags, bytes and frames per packet, ...
                per_packet = struct.unpack(">II", body[16:24])
                packet = per_packet if all(per_packet) else None
        elif cid == b"data":
            if packet is None:
                return Declared(None, None)
            start = pos + 16  # after the chunk header and the edit count
            held = (size - start) // packet[0] * packet[1]
            if length < 0:
                return Declared(None, held)
            frames = (length - 4) // packet[0] * packet[1]
            return Declared(frames, min(frames, held))
        if length < 0:
            break
        pos += 12 + length
    return Declared(None, None)
