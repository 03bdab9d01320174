"""The one RIFF chunk walker: WAV headers, and RIFF chunks kept inside FLAC files.

Used by the WAV truncation check (``sndfile.py``) and by XWAV directories
(``xwav.py``). Only headers are read: the walk stops at the ``data`` chunk
and seeks over every other chunk's body unless asked for it.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..errors import DecodeError


@dataclass(frozen=True)
class Chunk:
    id: bytes
    offset: int  # of the chunk's body in the stream
    size: int  # declared size of the body


def form(fh: BinaryIO) -> tuple[bool, bool]:
    """``(is_wave, little_endian)`` from the first 12 bytes (the stream is left after them)."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return False, True
    return True, head[:4] == b"RIFF"


def walk(fh: BinaryIO, end: int, little: bool = True, start: int | None = None) -> Iterator[Chunk]:
    """The chunks from ``start`` (default: where ``fh`` is) up to ``end``; ``data`` is the last one."""
    pos = fh.tell() if start is None else start
    fmt = "<I" if little else ">I"
    while pos + 8 <= end:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            return
        chunk = Chunk(head[:4], pos + 8, struct.unpack(fmt, head[4:])[0])
        yield chunk
        if chunk.id == b"data":
            return
        pos = chunk.offset + chunk.size + (chunk.size & 1)


def read_body(fh: BinaryIO, chunk: Chunk, limit: int = 1 << 20) -> bytes:
    fh.seek(chunk.offset)
    return fh.read(min(chunk.size, limit))


def header_chunks(fh: BinaryIO, size: int, limit: int = 1 << 20) -> dict[bytes, bytes]:
    """The bodies of a WAV's chunks before ``data`` (at most ``limit`` bytes each); {} if not a WAV."""
    is_wave, little = form(fh)
    if not is_wave:
        return {}
    return {c.id: read_body(fh, c, limit) for c in walk(fh, size, little) if c.id != b"data"}


def flac_riff_chunks(fh: BinaryIO) -> dict[bytes, bytes]:
    """The RIFF chunks that ``flac --keep-foreign-metadata`` keeps in ``riff`` APPLICATION blocks."""
    if fh.read(4) != b"fLaC":
        raise DecodeError("not a FLAC file")
    out = bytearray()
    last = False
    while not last:
        head = fh.read(4)
        if len(head) < 4:
            raise DecodeError("FLAC metadata ends early")
        last, kind, size = bool(head[0] & 0x80), head[0] & 0x7F, int.from_bytes(head[1:4], "big")
        if kind == 2:  # APPLICATION
            block = fh.read(size)
            if block[:4] == b"riff":
                out += block[4:]
        else:
            fh.seek(size, 1)  # PADDING and SEEKTABLE can be large: skip, never read
    data = io.BytesIO(bytes(out))
    is_wave, little = form(data)
    if not is_wave:
        data.seek(0)  # chunks without the RIFF form header
    return {c.id: read_body(data, c) for c in walk(data, len(out), little) if c.id != b"data"}
