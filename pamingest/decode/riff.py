"""The one RIFF chunk walker: WAV headers (RIFF, RIFX, RF64), and RIFF chunks kept inside FLAC files.

Used by the header-against-size check (``declared``, for ``sndfile.py``)
and by XWAV directories (``xwav.py``). Only headers are read: the walk stops
at the ``data`` chunk and seeks over every other chunk's body unless asked
for it.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from ..errors import DecodeError
from .containers import Declared
from .flac import MAGIC, metadata_blocks


@dataclass(frozen=True)
class Chunk:
    id: bytes
    offset: int  # of the chunk's body in the stream
    size: int  # declared size of the body


# RF64 and BW64 (EBU Tech 3306) give sizes over 4 GB in a ds64 chunk; their data chunk says 0xFFFFFFFF.
FORMS = (b"RIFF", b"RIFX", b"RF64", b"BW64")


def form(fh: BinaryIO) -> tuple[bool, bool]:
    """``(is_wave, little_endian)`` from the first 12 bytes (the stream is left after them)."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in FORMS or head[8:12] != b"WAVE":
        return False, True
    return True, head[:4] != b"RIFX"


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


def declared(fh: BinaryIO, size: int) -> Declared:
    """Frames a WAVE header declares in its ``data`` chunk, and the frames the object holds there.

    A data size of 0 or 0xFFFFFFFF (RF64: a ds64 data size of 0) is left
    open by recorders streaming to disk: the data runs to the end of the
    object, or to the chunks written after it (``open_data_end``). libsndfile
    finds no samples behind a size of 0, and would read those chunks as
    samples: the patches show it the size held.
    """
    fh.seek(0)
    head = fh.read(8)
    fh.seek(0)
    _, little = form(fh)
    order = "<" if little else ">"
    riff_end = 8 + struct.unpack(order + "I", head[4:8])[0] if len(head) == 8 else 0
    block_align = ds64 = None
    for chunk in walk(fh, size, little):
        if chunk.id == b"fmt ":
            body = read_body(fh, chunk, 16)
            if len(body) >= 14:
                block_align = struct.unpack(order + "H", body[12:14])[0] or None
        elif chunk.id == b"ds64":
            ds64 = chunk
        elif chunk.id == b"data":
            present = size - chunk.offset
            held = present // block_align if block_align else None
            length, rf64, patches = chunk.size, False, ()
            if ds64 is not None and chunk.size == 0xFFFFFFFF:
                rf64 = True
                body = read_body(fh, ds64, 16)
                length = struct.unpack("<Q", body[8:16])[0] if len(body) >= 16 else 0
                if length == 0 and held:
                    patches = ((ds64.offset + 8, struct.pack("<Q", held * block_align)),)
            elif length in (0, 0xFFFFFFFF) and block_align:
                end = open_data_end(fh, chunk.offset, riff_end, size, block_align, little)
                held = (end - chunk.offset) // block_align
                # libsndfile reads an open (0) size as no samples: it is shown the size held
                patches = ((chunk.offset - 4, struct.pack(order + "I", min(held * block_align, 0xFFFFFFFF))),)
            if length == 0 or (not rf64 and length == 0xFFFFFFFF) or not block_align:
                return Declared(None, held, patches)
            return Declared(length // block_align, min(length, present) // block_align)
    return Declared(None, None)


# How far back from the RIFF end chunks written after an open data chunk are looked for (LIST
# INFO, id3, cue: small, written at close).
TRAILING_CHUNKS_BYTES = 1 << 20


def open_data_end(fh: BinaryIO, data: int, riff_end: int, size: int, block_align: int, little: bool) -> int:
    """Where the samples of a data chunk with an open size (0 or 0xFFFFFFFF) end.

    A recorder that streams the samples and patches only the RIFF size when it
    closes, then appends chunks (LIST INFO, id3), leaves a RIFF size that ends
    where the last of those chunks does: the data ends where the first of them
    begins. That is the earliest point, at a whole frame after the data, from
    which a chain of chunks (four printable ASCII bytes of id, then a size)
    lands exactly on the RIFF end. Without a RIFF end inside the object, or
    without such a chain, the samples run to the end of the object (a RIFF
    size that is itself stale must not cut audio).
    """
    if not data < riff_end == size:
        return size  # no RIFF end, or bytes after it: a stale RIFF size or junk, nothing says which
    lo = max(data + 1, riff_end - TRAILING_CHUNKS_BYTES)
    fh.seek(lo - 1)
    before = fh.read(1)  # the byte before the first place looked at: a pad byte or a sample
    tail = np.frombuffer(fh.read(riff_end - lo), dtype=np.uint8)
    printable = (tail >= 0x20) & (tail < 0x7F)
    ids = printable[:-3] & printable[1:-2] & printable[2:-1] & printable[3:] if len(tail) >= 8 else printable[:0]
    fmt = "<I" if little else ">I"
    for at in np.flatnonzero(ids[: len(tail) - 7]).tolist():
        frame_bytes = lo + at - data
        pad = frame_bytes % block_align
        if block_align == 1 and frame_bytes % 2 == 0 and (tail[at - 1] if at else before[0]) == 0:
            pad = 1  # 8-bit mono: an odd count of samples and its zero pad byte (unsigned 0 is the rarest sample)
        if pad and (pad != 1 or (frame_bytes - 1) % 2 == 0):
            continue  # not after whole frames (and the pad byte after an odd-sized data chunk)
        q = at
        while q + 8 <= len(tail) and ids[q]:
            n = struct.unpack(fmt, tail[q + 4 : q + 8].tobytes())[0]
            q += 8 + n + (n & 1)
        if q == len(tail):
            return lo + at - pad
    return riff_end


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
    if fh.read(4) != MAGIC:
        raise DecodeError("not a FLAC file")
    out = bytearray()
    for kind, size in metadata_blocks(fh):
        if kind == 2:  # APPLICATION
            block = fh.read(size)
            if block[:4] == b"riff":
                out += block[4:]
    data = io.BytesIO(bytes(out))
    is_wave, little = form(data)
    if not is_wave:
        data.seek(0)  # chunks without the RIFF form header
    return {c.id: read_body(data, c) for c in walk(data, len(out), little) if c.id != b"data"}
