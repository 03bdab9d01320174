"""Sony Wave64 headers: the ``data`` chunk's declared length against the object.

Chunks are named by GUIDs and sized in 64 bits, header included, each
aligned to 8 bytes (libsndfile's ``w64.c``).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from .containers import Declared

_WAVE_GUID_TAIL = bytes.fromhex("f3acd3118cd100c04f8edb8a")
MAGIC = b"riff" + bytes.fromhex("2e91cf11a5d628db04c10000")
_FMT = b"fmt " + _WAVE_GUID_TAIL
_DATA = b"data" + _WAVE_GUID_TAIL
_HEADER = 40  # riff GUID, size, wave GUID


def declared(fh: BinaryIO, size: int) -> Declared:
    """Frames the ``data`` chunk declares, and those the object holds."""
    block_align = None
    pos = _HEADER
    while pos + 24 <= size:
        fh.seek(pos)
        head = fh.read(24)
        if len(head) < 24:
            break
        guid, length = head[:16], struct.unpack("<Q", head[16:])[0]
        if guid == _FMT:
            body = fh.read(16)
            if len(body) >= 14:
                block_align = struct.unpack("<H", body[12:14])[0] or None
        elif guid == _DATA:
            if not block_align or length < 24:
                return Declared(None, None)
            present = min(length - 24, size - pos - 24)
            return Declared((length - 24) // block_align, present // block_align)
        if length < 24:
            break  # a chunk that does not cover its own header: libsndfile decides
        pos += (length + 7) & ~7
    return Declared(None, None)
